"""ASCOOD against every baseline method on the embedded default (issue 16, figures in BENCHMARKS.md).

    python benchmarks/method_comparison.py [--sweep sweeps/quickstart.yaml] [--work DIR] [--resume] [--table] [--quick]

A copy of the sweep file with its per-dataset search and final stage as they are, every baseline
method in the comparison stage with the final seeds (ce, oe, mixoe, logitnorm, t2fnorm at their
papers' defaults, oe and mixoe on the embedded outlier set; vos with per-class queues of 100
instead of 1,000: the embedded benchmarks have 300–1,000 training images per class, so the
CIFAR queue would never fill and VOS would be CE), and no robust or transfer stage (the
comparison does not read them). Prints the comparison (`ascood.comparison`) as
Markdown: per dataset and OOD group, test AUROC / FPR@95 of the objective's scorer, mean ± std over
seeds, and each baseline's paired difference to the ASCOOD pick with its 95% t interval.

The sweep runs in `DIR/methods` (`ascood-sweep --resume`: an interrupted one goes on); its wall
time is a row of `DIR/rows.jsonl`, then each line of the comparison (benchmarks/rows.py).
`--resume` keeps those rows and reads the missing lines from the sweep's results.

Embedded benchmarks: a demo and a test bed, not results on the paper's benchmarks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import rows
import yaml

# ascood is imported where it is used: --table and a finished --resume do not import it
SWEEP = "sweep"
ALL_BASELINES = ["ce", "oe", "mixoe", "logitnorm", "t2fnorm", {"vos": {"vos_sample_number": 100}}]


def comparison_sweep(base: dict, work: Path, baselines: list = ALL_BASELINES) -> Path:
    data = {k: v for k, v in base.items() if k not in ("transfer", "robust")}
    data.update(name="methods", output=str(work / "methods"), baselines=baselines)
    if {"oe", "mixoe"} & {b if isinstance(b, str) else next(iter(b)) for b in baselines}:
        data["outliers"] = "embedded"
    else:
        data.pop("outliers", None)
    path = work / "methods.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def case(r: dict) -> str:
    return f"{r['benchmark']} / {r['group']} / {r['method']}"


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def markdown(table: list[dict]) -> str:
    lines = ["| dataset | OOD group | method | seeds | test AUROC | Δ AUROC [95%] | test FPR@95 | Δ FPR@95 [95%] | ID acc |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['benchmark']} | {r['group']} | {r['method']} | {r['seeds']} | {_f(r['auroc'])} ± {_f(r['auroc_std'])} | "
            f"{r['delta_auroc_text']} | {_f(r['fpr95'])} ± {_f(r['fpr95_std'])} | {r['delta_fpr95_text']} | "
            f"{_f(r['id_accuracy'])} |")
    return "\n".join(lines)


def table(rows_: list[dict]) -> str:
    sweep = next((r for r in rows_ if r["case"] == SWEEP), None)
    head = (f"sweep {sweep['file']}: {sweep['wall_s']:.0f} s (this run's part of it), scorer {sweep['scorer']}"
            f"{', quick' if sweep.get('quick') else ''}\n\n") if sweep else ""
    return head + markdown([r for r in rows_ if r["case"] != SWEEP])


def comparison(spec) -> list[dict]:
    """The comparison's lines as JSON values (NaN as null), each Δ also as the report writes it."""
    import json

    from ascood.comparison import delta_text, method_comparison
    from ascood.results import read_results

    df = method_comparison(read_results(Path(spec.output) / "results"), spec.objective)
    for m in ("auroc", "fpr95"):
        df[f"delta_{m}_text"] = [delta_text(*v) for v in df[[f"delta_{m}", f"delta_{m}_low", f"delta_{m}_high"]].to_numpy()]
    return json.loads(df.to_json(orient="records"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=Path("sweeps/quickstart.yaml"))
    rows.add_options(p, "method-comparison", f"search 2 trials, final and CE with one seed, 1 epoch, on "
                     f"{rows.QUICK_BENCHMARK}", work=Path("runs/method-comparison"))
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    book = rows.Rows(args)
    done = book.get(SWEEP)
    if done and not book.missing(done["lines"]):
        print(table(book.rows))
        return 0
    base = yaml.safe_load(args.sweep.read_text())
    baselines = ALL_BASELINES
    if args.quick:
        base = {**rows.quick_sweep(base), "num_samples": 2, "final": {"seeds": [0]}}
        baselines = ["ce"]
    path = comparison_sweep(base, args.work, baselines)
    from ascood.sweep.spec import load_sweep

    spec, _ = load_sweep(path)
    if not done:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress", "--resume"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{path}: the sweep failed:\n{proc.stderr[-3000:]}")
        wall = time.perf_counter() - t0
        lines = comparison(spec)
        done = book.add(SWEEP, {"file": str(path), "output": spec.output, "wall_s": round(wall, 1),
                                "scorer": spec.objective.scorer, "lines": [case(r) for r in lines]})
        print(f"sweep {path}: {wall:.0f} s (0 if it had finished before); scorer {spec.objective.scorer}", flush=True)
    else:
        lines = comparison(spec)
    book.measure((case(r), lambda r=r: r) for r in lines)
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
