"""Cost of evaluating a run with the full scorer suite (every registered scorer) and its
validation searches: compute-once (ours: one forward pass per set, shared by every scorer and grid
point; ODIN's gradient shared across ε, AdaSCALE's perturbation across its percentiles; KNN, NECO,
NCI and VRA share work between their grid points) against recomputing inference for every grid
point, as the reference (OpenOOD's APS loop) does.

    python benchmarks/eval_cost.py [--run DIR] [--benchmark cmnist] [--scorers all|a,b,…] [--breakdown]

`--scorers` measures a subset (both modes, same subset): the reference mode runs one inference
per grid point, over 200 of them for the whole suite. `--breakdown` adds where our time goes:
each scorer evaluated alone from the cached forward passes, less what an evaluation of MSP alone
costs (loading the run and the data, the cached outputs, writing nothing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ascood.config import validate_config
from ascood.evaluate import Evaluator
from ascood.metrics import ood_metrics
from ascood.posthoc import evaluate_run, load_run
from ascood.scorers import SCORERS, build_scorers
from ascood.trial import run_trial


def reference_style(evaluator: Evaluator, model, scorers) -> None:
    """Every grid point of every scorer re-runs inference over what it needs, then the chosen
    point is run again on validation and test (no sharing between points or scorers)."""
    val_ood = [("val", o.name) for o in evaluator.data.ood]
    for scorer in scorers:
        best, best_auroc = None, -np.inf
        for point in type(scorer).grid_points():
            cand = type(scorer)(**{**scorer.params(), **point})
            if cand.needs_input and getattr(cand, "needs_reference", False):  # AdaSCALE's ID-validation CDF
                cand.set_reference(*evaluator._reference(cand, model))
            outputs = evaluator.all_outputs(model, train=cand.needs_train)
            cand.setup(outputs.get(("train", "id")), model.head)
            id_s = evaluator.score(cand, model, ("val", "id"), outputs).numpy()
            ood_s = np.concatenate([evaluator.score(cand, model, k, outputs).numpy() for k in val_ood])
            auroc = ood_metrics(id_s, ood_s).auroc
            if auroc > best_auroc:
                best, best_auroc = cand, auroc
        if best.needs_input and getattr(best, "needs_reference", False):
            best.set_reference(*evaluator._reference(best, model))
        outputs = evaluator.all_outputs(model, train=best.needs_train)
        for key in outputs:
            if key[0] != "train":
                evaluator.score(best, model, key, outputs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run directory (default: train a 2-epoch one)")
    p.add_argument("--benchmark", default="cmnist")
    p.add_argument("--scorers", default="all", help="comma-separated scorer names, or 'all' (default)")
    p.add_argument("--breakdown", action="store_true", help="also time each scorer alone (ours, cached)")
    args = p.parse_args()
    names = list(SCORERS) if args.scorers == "all" else [n.strip() for n in args.scorers.split(",")]
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        p.error(f"--scorers: unknown {', '.join(unknown)}")
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="eval-cost-")) / "run"
        cfg = validate_config(dict(benchmark=args.benchmark, epochs=2, batch_size=32, scorers="msp"))
        run_trial(cfg, run)

    t0 = time.perf_counter()
    evaluate_run(run, benchmark=None, scorer_names=names, search=True, use_cache=False)
    ours = time.perf_counter() - t0
    evaluate_run(run, benchmark=None, scorer_names=names, search=True, use_cache=True)  # writes the cache
    t0 = time.perf_counter()
    evaluate_run(run, benchmark=None, scorer_names=names, search=True, use_cache=True)
    cached = time.perf_counter() - t0

    from ascood.data import load_benchmark
    from ascood.models import create_model
    from ascood.train import make_accelerator

    cfg, state = load_run(run)
    data = load_benchmark(cfg.benchmark)
    acc = make_accelerator()
    model = create_model(cfg.backbone, num_classes=data.num_classes, **cfg.head_options())
    model.load_state_dict(state["model"])
    model = model.to(memory_format=torch.channels_last).eval()
    ev = Evaluator(data, acc, batch_size=cfg.eval_batch_size, channels_last=True)
    t0 = time.perf_counter()
    reference_style(ev, model, build_scorers(names, cfg.scorer_overrides()))
    reference = time.perf_counter() - t0

    points = sum(len(SCORERS[n].grid_points()) for n in names)
    print(f"# eval cost: {cfg.benchmark}, {cfg.backbone}, {len(names)} scorers, {points} grid points, "
          f"{torch.get_num_threads()} threads")
    print("| mode | seconds | × faster than reference |")
    print("|---|---:|---:|")
    print(f"| reference style: inference per grid point | {reference:.1f} | 1.0 |")
    print(f"| ours: one pass per set, no cache | {ours:.1f} | {reference / ours:.1f} |")
    print(f"| ours: features cached in the run directory | {cached:.1f} | {reference / cached:.1f} |")
    if args.breakdown:
        print_breakdown(run, names, ours)


def alone(run: Path, names: list[str]) -> float:
    t0 = time.perf_counter()
    evaluate_run(run, benchmark=None, scorer_names=names, search=True, use_cache=True)
    return time.perf_counter() - t0


def print_breakdown(run: Path, names: list[str], total: float) -> None:
    alone(run, ["msp"])  # warm: imports, the data's cache
    floor = min(alone(run, ["msp"]) for _ in range(3))
    own = {n: max(0.0, alone(run, [n]) - floor) for n in names}
    print()
    print(f"# each scorer alone (validation search included), beyond MSP alone ({floor:.1f} s)")
    print("| scorer | grid points | seconds | share of ours (no cache) |")
    print("|---|---:|---:|---:|")
    for n, sec in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"| {n} | {len(SCORERS[n].grid_points())} | {sec:.1f} | {100 * sec / total:.0f}% |")


if __name__ == "__main__":
    main()
