"""What a benchmark measured, kept as it is measured: one JSON object a line in `DIR/rows.jsonl`,
appended and flushed row by row, so that an interrupted run loses at most the row in progress,
`--resume` measures only the cases still missing and `--table` prints BENCHMARKS.md's table from
the rows instead of a figure typed by hand.

A row holds its case key, the measured values, the settings it was measured with, `quick`, and
where and when: commit, platform, CPU, load average, UTC time.

For benchmarks/gpu_smoke.sh, a command line (`KEY=TEXT`, or `KEY:=JSON` for a number or a list):

    python benchmarks/rows.py add FILE name=device result=PASS seconds:=3 detail=…
    python benchmarks/rows.py keys FILE name result=PASS,SKIP mode=cpu   # the names of matching rows
    python benchmarks/rows.py table FILE name result seconds detail
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICK_BENCHMARK = "cmnist[classes=2]"  # the smallest embedded benchmark: what every --quick trains on
OWN_OPTIONS = ("work", "resume", "table", "quick")


def add_options(p: argparse.ArgumentParser, name: str, quick: str, *, work: Path | None = None,
                table_file: bool = False) -> None:
    """--work, --resume, --table and --quick; `quick` says what --quick makes smaller."""
    p.add_argument("--work", type=Path, default=work or REPO / "runs" / f"bench-{name}",
                   help="the rows go to DIR/rows.jsonl as each is measured, beside what the runs write (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in --work and measure only the missing cases; without it the rows "
                        "file starts anew")
    if table_file:
        p.add_argument("--table", nargs="?", const=True, default=False, metavar="FILE",
                       help="print the table of the rows in --work (or in the JSON-lines FILE) and measure nothing")
    else:
        p.add_argument("--table", action="store_true", help="print the table of the rows in --work and measure nothing")
    p.add_argument("--quick", action="store_true", help=f"a small version: {quick}")


def read(path: Path) -> list[dict]:
    """The rows of a file; a last line cut short by a kill is not a row."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _finite(v: Any) -> Any:
    """NaN and ±inf as null: a rows file is plain JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def append(path: Path, row: dict) -> dict:
    """One row, on the disk before this returns; the row as it will be read back."""
    row = _finite(row)
    with path.open("a") as f:
        f.write(json.dumps(row, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return row


@functools.cache
def _git(*argv: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def where_and_when() -> dict:
    """What makes a figure comparable: the code, the machine, how busy it was, when."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "--short", "HEAD") or None, "dirty": None if status is None else bool(status),
            "platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "loadavg_1m": round(os.getloadavg()[0], 2),
            "utc": datetime.now(UTC).isoformat(timespec="seconds")}


def settings_of(args: argparse.Namespace) -> dict:
    """The command line's settings as JSON values (after --quick changed them)."""
    raw = {k: v for k, v in vars(args).items() if k not in OWN_OPTIONS}
    return json.loads(json.dumps(raw, default=str))


class Rows:
    """A benchmark run's rows file. `free` names the settings a resumed run may change: those that
    pick the cases (a new case is measured beside the old ones) or say where outputs go."""

    def __init__(self, args: argparse.Namespace, *, key: str = "case", free: Iterable[str] = ()):
        self.work: Path = args.work
        self.path = self.work / "rows.jsonl"
        self.key, self.quick = key, bool(args.quick)
        self.settings = settings_of(args)
        self.work.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            self.path.unlink(missing_ok=True)
        elif self.path.exists() and not self.path.read_text().endswith("\n") and self.path.stat().st_size:
            text = self.path.read_text()  # a row cut short by a kill: dropped, it is measured again
            self.path.write_text(text[: text.rfind("\n") + 1])
        self.rows = read(self.path)
        fixed = {k: v for k, v in self.settings.items() if k not in set(free)}
        for row in self.rows:
            old = {k: v for k, v in row.get("settings", {}).items() if k in fixed}
            if "settings" in row and (old != fixed or row.get("quick", False) != self.quick):
                changed = sorted(k for k in fixed if old.get(k) != fixed[k]) or ["quick"]
                raise SystemExit(f"{self.path}: row {row.get(key)!r} was measured with other settings "
                                 f"({', '.join(changed)}); run again without --resume, or with its settings")

    def done(self, case: Any) -> bool:
        return any(r.get(self.key) == case for r in self.rows)

    def missing(self, cases: Iterable[Any]) -> list:
        """The cases not measured yet (what a run must set up for; none after a finished run)."""
        return [c for c in cases if not self.done(c)]

    def get(self, case: Any) -> dict | None:
        return next((r for r in self.rows if r.get(self.key) == case), None)

    def add(self, case: Any, values: dict) -> dict:
        row = {self.key: case, **values, "settings": self.settings, "quick": self.quick, **where_and_when()}
        self.rows.append(append(self.path, row))
        return self.rows[-1]

    def measure(self, cases: Iterable[tuple[Any, Callable[[], dict]]],
                say: Callable[[dict], str] | None = None) -> list[dict]:
        """Measure each case not in the file yet, keeping its row as soon as it is measured."""
        new = []
        for case, run in cases:
            if self.done(case):
                continue
            new.append(self.add(case, run()))
            if say:
                print(say(new[-1]), flush=True)
        return new


def table_only(args: argparse.Namespace, table: Callable[[list[dict]], str]) -> bool:
    """With --table: print the table of the rows there and say so (the caller then stops)."""
    if not args.table:
        return False
    path = args.work / "rows.jsonl" if args.table is True else Path(args.table)
    rows = read(path)
    if not rows:
        raise SystemExit(f"{path}: no rows")
    print(table(rows))
    return True


def markdown(header: list[str], lines: Iterable[Iterable[Any]], align: str = "") -> str:
    """A Markdown table; `align` has one letter per column, `r` for a right-aligned one."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def quick_sweep(spec: dict, datasets: int = 1) -> dict:
    """A sweep file's mapping made as small as a sweep gets: `datasets` embedded benchmarks (the
    smallest first), a small CNN, one epoch, no trackers."""
    spec = json.loads(json.dumps(spec))
    spec["datasets"] = [{"benchmark": b} for b in (QUICK_BENCHMARK, "mnist6", "mnist10")[:datasets]]
    spec["trial"] = {**spec.get("trial", {}), "backbone": "small_cnn", "epochs": 1, "batch_size": 64}
    spec["tracking"] = "none"
    return spec


def _fields(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        k, sep, v = pair.partition(":=")
        if sep:
            out[k] = json.loads(v)
        else:
            k, _, v = pair.partition("=")
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Rows of a benchmark: add one, list keys, print a table.")
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="append a row (KEY=TEXT or KEY:=JSON), where and when added")
    add.add_argument("file", type=Path)
    add.add_argument("fields", nargs="+")
    keys = sub.add_parser("keys", help="the FIELD of every row whose fields match (KEY=V1,V2)")
    keys.add_argument("file", type=Path)
    keys.add_argument("field")
    keys.add_argument("match", nargs="*")
    tab = sub.add_parser("table", help="a Markdown table of these columns")
    tab.add_argument("file", type=Path)
    tab.add_argument("columns", nargs="+")
    args = p.parse_args(argv)
    if args.command == "add":
        args.file.parent.mkdir(parents=True, exist_ok=True)
        append(args.file, {**_fields(args.fields), **where_and_when()})
    elif args.command == "keys":
        want = {k: v.split(",") for k, v in _fields(args.match).items()}
        for row in read(args.file):
            if all(str(row.get(k)) in vs for k, vs in want.items()):
                print(row.get(args.field))
    else:
        cells = ([str(row.get(c, "")).replace("|", "\\|") for c in args.columns] for row in read(args.file))
        print(markdown(args.columns, cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
