"""Where a sweep's time went: an append-only log of what the driver saw, `OUT/timeline.jsonl`.

One JSON object per line: `t` (Unix time), `session` (one per driver run, so a resumed sweep's
lines are told apart), `event`, and for trial events the stage key, the trial id and, on results,
the trial's epoch, `wall_time_s` (training plus evaluation so far), its process (`pid`) and when
that process started and the trainable was entered. `benchmarks/sweep_overhead.py` turns it into an overhead
breakdown. It is a log of events, not results: nothing reads it to decide anything.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

FILE = "timeline.jsonl"
TRIAL_TIMES = ("epoch", "epochs", "wall_time_s", "t_process", "t_entered", "pid")

_lock = threading.Lock()
_path: Path | None = None
_session = uuid.uuid4().hex[:12]


def start(out: Path | None) -> None:
    """Log to `out/timeline.jsonl` from now on (None: log nothing, e.g. an object-storage output)."""
    global _path, _session
    _path, _session = (None if out is None else Path(out) / FILE), uuid.uuid4().hex[:12]


def record(event: str, **fields) -> None:
    if _path is None:
        return
    line = json.dumps({"t": time.time(), "session": _session, "event": event, **fields}, default=str)
    with _lock, _path.open("a") as f:
        f.write(line + "\n")


def trial_event(key: str, trial_id: str, kind: str, result: dict | None) -> None:
    times = {k: result[k] for k in TRIAL_TIMES if result and result.get(k) is not None}
    record(f"trial_{kind}", stage=key, trial=trial_id, **times)


def read(out: Path) -> list[dict]:
    path = Path(out) / FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
