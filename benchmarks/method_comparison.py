"""ASCOOD against every baseline method on the embedded default (issue 16, figures in BENCHMARKS.md).

    python benchmarks/method_comparison.py [--sweep sweeps/quickstart.yaml] [--work DIR]

A copy of the sweep file with its per-dataset search and final stage as they are, every baseline
method in the comparison stage with the final seeds (ce, oe, mixoe, logitnorm, t2fnorm at their
papers' defaults, oe and mixoe on the embedded outlier set; vos with per-class queues of 100
instead of 1,000: the embedded benchmarks have 300–1,000 training images per class, so the
CIFAR queue would never fill and VOS would be CE), and no robust or transfer stage (the
comparison does not read them). Prints the comparison (`ascood.comparison`) as
Markdown: per dataset and OOD group, test AUROC / FPR@95 of the objective's scorer, mean ± std over
seeds, and each baseline's paired difference to the ASCOOD pick with its 95% t interval.

Embedded benchmarks: a demo and a test bed, not results on the paper's benchmarks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ascood.comparison import delta_text, method_comparison
from ascood.results import read_results
from ascood.sweep.spec import load_sweep

ALL_BASELINES = ["ce", "oe", "mixoe", "logitnorm", "t2fnorm", {"vos": {"vos_sample_number": 100}}]


def comparison_sweep(base: dict, work: Path) -> Path:
    data = {k: v for k, v in base.items() if k not in ("transfer", "robust")}
    data.update(name="methods", output=str(work / "methods"), baselines=ALL_BASELINES, outliers="embedded")
    path = work / "methods.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def markdown(table) -> str:
    lines = ["| dataset | OOD group | method | seeds | test AUROC | Δ AUROC [95%] | test FPR@95 | Δ FPR@95 [95%] | ID acc |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['benchmark']} | {r['group']} | {r['method']} | {r['seeds']} | {r['auroc']:.1f} ± {r['auroc_std']:.1f} | "
            f"{delta_text(r['delta_auroc'], r['delta_auroc_low'], r['delta_auroc_high'])} | "
            f"{r['fpr95']:.1f} ± {r['fpr95_std']:.1f} | "
            f"{delta_text(r['delta_fpr95'], r['delta_fpr95_low'], r['delta_fpr95_high'])} | {r['id_accuracy']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=Path("sweeps/quickstart.yaml"))
    p.add_argument("--work", type=Path, default=Path("runs/method-comparison"))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = comparison_sweep(yaml.safe_load(args.sweep.read_text()), args.work)
    spec, _ = load_sweep(path)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress", "--resume"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{path}: the sweep failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    table = method_comparison(read_results(Path(spec.output) / "results"), spec.objective)
    print(f"sweep {path}: {wall:.0f} s (0 if it had finished before); scorer {spec.objective.scorer}\n")
    print(markdown(table))


if __name__ == "__main__":
    main()
