"""Live sweep progress (Rich), fed by a Tune callback running in the driver.

The callback holds no console or lock itself (Tune pickles callbacks with the experiment state
and restores them on resume); it reports to the module's current `SweepProgress`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ascood.sweep import timeline
from ascood.sweep.outcome import trial_outcome
from ascood.sweep.phases import PHASE
from ascood.sweep.record import REPLAYED


@dataclass
class StageState:
    planned: int
    mode: str
    running: set = field(default_factory=set)
    done: int = 0
    stopped: int = 0
    failed: int = 0
    best: float | None = None
    started: float = field(default_factory=time.monotonic)

    def offer(self, value: float | None) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value


class SweepProgress:
    def __init__(self, console: Console, *, live: bool, objective_label: str):
        self.console = console
        self.objective_label = objective_label
        self.stages: dict[str, StageState] = {}
        self.t0 = time.monotonic()
        self._lock = threading.RLock()  # several datasets' Tune loops report from their own threads
        self._live = Live(self._table(), console=console, refresh_per_second=2, transient=False) if live else None

    def __enter__(self) -> SweepProgress:
        global CURRENT
        CURRENT = self
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        global CURRENT
        CURRENT = None
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(*exc)

    def begin(self, key: str, planned: int, mode: str, done: int = 0) -> None:
        """A stage starts, or is seen again after a resume with `done` of its trials ended before."""
        with self._lock:
            self.stages.setdefault(key, StageState(planned, mode, done=done))
            self.refresh()

    def event(self, key: str, trial_id: str, kind: str, result: dict | None = None) -> None:
        with self._lock:
            self._event(key, trial_id, kind, result)

    def _event(self, key: str, trial_id: str, kind: str, result: dict | None) -> None:
        st = self.stages.get(key)
        if st is None:
            return
        if kind == "start":
            st.running.add(trial_id)
        elif kind == "result" and result:
            st.running.add(trial_id)
            if result.get("epoch", 0) >= result.get("epochs", math.inf):
                st.offer(result.get("objective"))
        else:
            st.running.discard(trial_id)
            st.done += 1
            if kind == "stopped":
                st.stopped += 1
            elif kind == "failed":
                st.failed += 1
            elif result:
                st.offer(result.get("objective"))
            if self._live is None:
                best = "-" if st.best is None else f"{st.best:.2f}"
                how = " (as recorded before the crash)" if result and result.get(REPLAYED) else ""
                self.console.print(f"{escape(key)}: trial {trial_id} {kind}{how}; {st.done}/{st.planned} done, best {best}")
        self.refresh()

    def refresh(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.update(self._table())

    def _table(self) -> Table:
        elapsed = time.monotonic() - self.t0
        table = Table(title=f"sweep progress · {elapsed / 60:.1f} min elapsed", caption=f"best = {self.objective_label}")
        for col in ("dataset · stage", "done", "running", "stopped", "failed", "best", "elapsed", "ETA"):
            table.add_column(col, justify="left" if col.startswith("dataset") else "right")
        for key, st in self.stages.items():
            spent = time.monotonic() - st.started
            left = st.planned - st.done
            eta = "-" if st.done == 0 else ("0s" if left <= 0 else f"{spent / st.done * left / 60:.1f} min")
            best = "-" if st.best is None else f"{st.best:.2f}"
            table.add_row(escape(key), f"{st.done}/{st.planned}", str(len(st.running)), str(st.stopped), str(st.failed),
                          best, f"{spent / 60:.1f} min", eta)
        return table


CURRENT: SweepProgress | None = None


class ProgressCallback(Callback):
    """The driver's view of every stage's trials (each trial's config names its stage's phase):
    the live display and the timeline."""

    def _emit(self, trial, kind: str, result: dict | None = None) -> None:
        key = trial.config.get(PHASE, "")
        if CURRENT is not None:
            CURRENT.event(key, trial.trial_id, kind, result)
        timeline.trial_event(key, trial.trial_id, kind, result)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._emit(trial, "start")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._emit(trial, "result", result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        kind = {"failed": "failed", "stopped-early": "stopped", "completed": "completed"}[trial_outcome(last)]
        self._emit(trial, kind, last)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._emit(trial, "failed")
