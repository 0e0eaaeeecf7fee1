"""How a sweep's wall time and engine overhead grow with its size: trials per dataset × datasets.

    python benchmarks/sweep_growth.py [sweeps/quickstart.yaml] [--samples 10,20,40] [--datasets 1,2,3]
        [--work DIR] [--resume] [--table] [--quick]

Each cell is the sweep file's search stage alone (its trial settings, space, sampler, scheduler
and resources) with `num_samples` trials on its first N datasets, run into a fresh directory and
measured as `benchmarks/sweep_overhead.py` measures one sweep. Cells run one after another, the
smallest first; each is a row in `DIR/rows.jsonl` as soon as it is measured (benchmarks/rows.py),
and the table is printed after every cell: `--resume` runs only the cells not there (also new
ones beside them), `--table` prints the table of the rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rows
import yaml
from sweep_overhead import measure, measured, shaped, values


def table(rows_: list[dict]) -> str:
    lines = []
    for r in sorted(rows_, key=lambda r: (r["datasets"], r["samples"])):
        m, p = measured(r), r["parts"]
        idle = p["scheduling gaps"] + p["stage ends"]
        lines.append((r["datasets"], r["samples"], m.trials, f"{m.wall:.0f} s", f"{m.busy / m.conc:.0f} s",
                      f"{m.overhead:.0f} s", f"**{100 * m.share:.1f}%**", f"{p['actor start (process, imports)']:.0f} s",
                      f"{p['set-up inside trials (data, model, trackers)']:.0f} s", f"{idle:.0f} s"))
    quick = " (quick)" if any(r.get("quick") for r in rows_) else ""
    return rows.markdown(["datasets", "trials per dataset", "trials", "wall", "trials' train+eval ÷ concurrency",
                          "overhead", "share", "actor start", "set-up in trials", f"gaps + stage ends{quick}"],
                         lines, "r" * 10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, nargs="?", default=rows.REPO / "sweeps" / "quickstart.yaml")
    p.add_argument("--samples", default="10,20,40")
    p.add_argument("--datasets", default="1,2,3")
    rows.add_options(p, "sweep-growth", f"one cell: 2 trials of 1 epoch on {rows.QUICK_BENCHMARK}")
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    base = yaml.safe_load(args.sweep.read_text())
    if args.quick:
        base = rows.quick_sweep(base)
        args.samples, args.datasets = "2", "1"
    book = rows.Rows(args, free=("samples", "datasets"))
    for n_data in (int(v) for v in args.datasets.split(",")):
        for n_samples in (int(v) for v in args.samples.split(",")):
            spec = shaped(base, argparse.Namespace(datasets=n_data, no_stages=True, samples=n_samples, samples_scale=1.0))
            cell = f"{n_data} × {n_samples}"
            out = args.work / f"d{n_data}-n{n_samples}" / "out"
            row = {"datasets": n_data, "samples": n_samples}
            if book.measure([(cell, lambda spec=spec, out=out, cell=cell, row=row: {
                    **row, **values(measure(spec, out, cell))})]):
                print(table(book.rows), flush=True)
                print(flush=True)
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
