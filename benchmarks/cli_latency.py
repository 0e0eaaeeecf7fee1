"""How fast every console script answers: `--help`, and the refusal of a bad input, in wall seconds.

    python benchmarks/cli_latency.py [--repeats 5] [--work DIR] [--resume] [--table] [--quick]

Each command runs `--repeats` times warm (bytecode cached, files in the page cache) and once cold
(an empty `PYTHONPYCACHEPREFIX`: every module compiled anew, as on a fresh clone); the median of
the warm runs and the cold run are the row. Rows go to `DIR/rows.jsonl` as each is measured;
`--resume` keeps the rows already there, `--table` prints the BENCHMARKS.md table from them.
`--quick`: two warm runs each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def measure(name: str, argv: list[str], repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        cold, rc = _run(argv, {**os.environ, "PYTHONPYCACHEPREFIX": cache})
    _run(argv, dict(os.environ))  # the bytecode written for the warm runs
    warm = [_run(argv, dict(os.environ))[0] for _ in range(repeats)]
    return {"command": name, "rc": rc, "cold_s": round(cold, 3), "warm_median_s": round(statistics.median(warm), 3),
            "warm_s": [round(w, 3) for w in warm], "repeats": repeats}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def table(rows: list[dict]) -> str:
    lines = ["| command | exit | warm, median (s) | cold (s) |", "|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['rc']} | {r['warm_median_s']:.2f} | {r['cold_s']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench-cli-latency")
    p.add_argument("--resume", action="store_true", help="keep the rows already measured in --work")
    p.add_argument("--table", action="store_true", help="print the table of the rows in --work and stop")
    p.add_argument("--quick", action="store_true", help="two warm runs per command")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows_file = args.work / "rows.jsonl"
    if args.table:
        print(table(read_rows(rows_file)))
        return 0
    if not args.resume:
        rows_file.unlink(missing_ok=True)
    done = {r["command"] for r in read_rows(rows_file)}
    repeats = 2 if args.quick else args.repeats
    for name, cmd in commands(args.work).items():
        if name in done:
            continue
        row = measure(name, cmd, repeats)
        with rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: exit {row['rc']}, warm {row['warm_median_s']:.2f} s, cold {row['cold_s']:.2f} s", flush=True)
    print(table(read_rows(rows_file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
