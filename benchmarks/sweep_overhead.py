"""Engine overhead of a sweep: its wall time against the trials' own training-and-evaluation time.

    python benchmarks/sweep_overhead.py sweeps/quickstart.yaml [--output DIR]

Runs the sweep into a fresh output directory, then reads every trial's `wall_time_s` (time
inside `run_trial`: training plus evaluation) from the Parquet results. The ideal wall time is
their sum divided by the concurrency; what the sweep took beyond that is the engine's overhead
(Ray start-up, trial actor and process start, imports, data loading, scheduling, stragglers).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--output", type=Path, help="output directory (default: a temporary one)")
    args = p.parse_args()

    spec = yaml.safe_load(args.sweep.read_text())
    out = args.output or Path(tempfile.mkdtemp(prefix="sweep-overhead-")) / "out"
    spec["output"] = str(out)
    tmp_file = out.parent / "sweep.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_file.write_text(yaml.safe_dump(spec))

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(tmp_file), "--fresh", "--no-progress"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed:\n{proc.stderr[-3000:]}")

    df = pd.read_parquet(out / "results")
    df = df[df["reused_from"].isna()]  # a reused run was trained (and counted) once, by its original trial
    per_trial = df.groupby(["stage", "benchmark", "trial_id"])["wall_time_s"].max()
    busy = float(per_trial.sum())
    conc = spec.get("resources", {}).get("max_concurrent_trials", 2)
    ideal = busy / conc
    overhead = wall - ideal
    print(f"sweep {spec['name']}: {len(per_trial)} trials, concurrency {conc}")
    print("| wall time | trials' train+eval time | ÷ concurrency | overhead | overhead share |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {wall:.0f} s | {busy:.0f} s | {ideal:.0f} s | {overhead:.0f} s | {100 * overhead / wall:.0f}% |")


if __name__ == "__main__":
    main()
