"""How fast every console script answers: `--help`, and the refusal of a bad input, in wall seconds.

    python benchmarks/cli_latency.py [--repeats 5] [--work DIR] [--resume] [--table] [--quick]

Each command runs `--repeats` times warm (bytecode cached, files in the page cache) and once cold
(an empty `PYTHONPYCACHEPREFIX`: every module compiled anew, as on a fresh clone); the median of
the warm runs and the cold run are the row. Rows go to `DIR/rows.jsonl` as each is measured
(benchmarks/rows.py); `--resume` keeps the rows already there, `--table` prints the BENCHMARKS.md
table from them. `--quick`: one warm run each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rows
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("ascood-train", "ascood-sweep", "ascood-eval", "ascood-data", "ascood-export", "ascood-score")


def bad_inputs(work: Path) -> dict[str, list[str]]:
    """One bad input per kind of refusal: a sweep file with a missing field, a 100,000-character
    name, an option out of range."""
    quick = yaml.safe_load((REPO / "sweeps" / "quickstart.yaml").read_text())
    missing = {k: v for k, v in quick.items() if k != "output"}
    (work / "missing.yaml").write_text(yaml.safe_dump(missing))
    (work / "long-name.yaml").write_text(yaml.safe_dump({**quick, "name": "n" * 100_000}))
    return {
        "ascood-sweep (sweep file missing a field)": ["ascood-sweep", str(work / "missing.yaml")],
        "ascood-sweep (name of 100,000 characters)": ["ascood-sweep", str(work / "long-name.yaml")],
        "ascood-train --p-inv 2": ["ascood-train", "--p-inv", "2"],
    }


def commands(work: Path) -> dict[str, list[str]]:
    return {**{f"{s} --help": [s, "--help"] for s in SCRIPTS}, **bad_inputs(work)}


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    exe = Path(sys.executable).parent / argv[0]
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True, env=env, timeout=600)
    return time.perf_counter() - t0, proc.returncode


def measure(argv: list[str], repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        cold, rc = _run(argv, {**os.environ, "PYTHONPYCACHEPREFIX": cache})
    _run(argv, dict(os.environ))  # the bytecode written for the warm runs
    warm = [_run(argv, dict(os.environ))[0] for _ in range(repeats)]
    return {"rc": rc, "cold_s": round(cold, 3), "warm_median_s": round(statistics.median(warm), 3),
            "warm_s": [round(w, 3) for w in warm], "repeats": repeats}


def table(rows_: list[dict]) -> str:
    lines = ["| command | exit | warm, median (s) | cold (s) |", "|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['rc']} | {r['warm_median_s']:.2f} | {r['cold_s']:.2f} |" for r in rows_]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    rows.add_options(p, "cli-latency", "one warm run per command")
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    if args.quick:
        args.repeats = 1
    book = rows.Rows(args, key="command")
    book.measure(((name, lambda cmd=cmd: measure(cmd, args.repeats)) for name, cmd in commands(args.work).items()),
                 say=lambda r: f"{r['command']}: exit {r['rc']}, warm {r['warm_median_s']:.2f} s, cold {r['cold_s']:.2f} s")
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
