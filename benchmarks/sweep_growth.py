"""How a sweep's wall time and engine overhead grow with its size: trials per dataset × datasets.

    python benchmarks/sweep_growth.py sweeps/quickstart.yaml [--samples 10,20,40] [--datasets 1,2,3]
        [--work DIR]

Each cell is the sweep file's search stage alone (its trial settings, space, sampler, scheduler
and resources) with `num_samples` trials on its first N datasets, run into a fresh directory and
measured as `benchmarks/sweep_overhead.py` measures one sweep. Cells run one after another, the
smallest first; a Markdown table is printed at the end (and after every cell, so a long run that
is stopped keeps what it measured).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml
from sweep_overhead import Measured, measure, shaped


def table(cells: list[tuple[int, int, Measured]]) -> str:
    lines = ["| datasets | trials per dataset | trials | wall | trials' train+eval ÷ concurrency | overhead | share "
             "| actor start | set-up in trials | gaps + stage ends |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n_data, n_samples, m in cells:
        p = m.parts
        idle = p["scheduling gaps"] + p["stage ends"]
        lines.append(f"| {n_data} | {n_samples} | {m.trials} | {m.wall:.0f} s | {m.busy / m.conc:.0f} s "
                     f"| {m.overhead:.0f} s | **{100 * m.share:.1f}%** | {p['actor start (process, imports)']:.0f} s "
                     f"| {p['set-up inside trials (data, model, trackers)']:.0f} s | {idle:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--samples", default="10,20,40")
    p.add_argument("--datasets", default="1,2,3")
    p.add_argument("--work", type=Path, help="where the cells' outputs go (default: a temporary directory)")
    args = p.parse_args()
    base = yaml.safe_load(args.sweep.read_text())
    work = args.work or Path(tempfile.mkdtemp(prefix="sweep-growth-"))
    cells = []
    for n_data in (int(v) for v in args.datasets.split(",")):
        for n_samples in (int(v) for v in args.samples.split(",")):
            spec = shaped(base, argparse.Namespace(datasets=n_data, no_stages=True, samples=n_samples, samples_scale=1.0))
            out = work / f"d{n_data}-n{n_samples}" / "out"
            cells.append((n_data, n_samples, measure(spec, out, f"{n_data} × {n_samples}")))
            print(table(cells), flush=True)
            print(flush=True)


if __name__ == "__main__":
    main()
