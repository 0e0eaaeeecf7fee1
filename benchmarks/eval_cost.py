"""Cost of evaluating a run with the full scorer suite (every registered scorer) and its
validation searches: compute-once (ours: one forward pass per set, shared by every scorer and grid
point; ODIN's gradient shared across ε, AdaSCALE's perturbation across its percentiles; KNN, NECO,
NCI and VRA share work between their grid points) against recomputing inference for every grid
point, as the reference (OpenOOD's APS loop) does.

    python benchmarks/eval_cost.py [--run DIR] [--benchmark cmnist] [--epochs 2] [--scorers all|a,b,…] [--breakdown]
        [--work DIR] [--resume] [--table] [--quick]

`--scorers` measures a subset (both modes, same subset): the reference mode runs one inference
per grid point, over 200 of them for the whole suite. `--breakdown` adds where our time goes:
each scorer evaluated alone from the cached forward passes, less what an evaluation of MSP alone
costs (loading the run and the data, the cached outputs, writing nothing).

Each timing is a row in `DIR/rows.jsonl` as soon as it is taken (benchmarks/rows.py), the trained
run (without `--run`) is kept in `DIR/run`: `--resume` times only what is missing, on that run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import rows

# torch and ascood are imported where they are used: --table and a finished --resume import neither
MODES = {"reference": "reference style: inference per grid point", "ours": "ours: one pass per set, no cache",
         "cached": "ours: features cached in the run directory"}
FLOOR = "msp alone (floor)"


def reference_style(evaluator, model, scorers) -> None:
    """Every grid point of every scorer re-runs inference over what it needs, then the chosen
    point is run again on validation and test (no sharing between points or scorers)."""
    import numpy as np

    from ascood.metrics import ood_metrics

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


def reference(run: Path, names: list[str]) -> float:
    import torch

    from ascood.data import load_benchmark
    from ascood.evaluate import Evaluator
    from ascood.models import create_model
    from ascood.posthoc import load_run
    from ascood.scorers import build_scorers
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
    return time.perf_counter() - t0


def alone(run: Path, names: list[str], *, use_cache: bool = True, warm: bool = False) -> float:
    from ascood.posthoc import evaluate_run

    if warm:  # the cache written (and imports, the data's cache) before the timed call
        evaluate_run(run, benchmark=None, scorer_names=names, search=True, use_cache=True)
    t0 = time.perf_counter()
    evaluate_run(run, benchmark=None, scorer_names=names, search=True, use_cache=use_cache)
    return time.perf_counter() - t0


def train(run: Path, benchmark: str, epochs: int) -> dict:
    from ascood.config import validate_config
    from ascood.trial import run_trial

    cfg = validate_config(dict(benchmark=benchmark, epochs=epochs, batch_size=32, scorers="msp"))
    t0 = time.perf_counter()
    result = run_trial(cfg, run, overwrite=True)
    if result.status != "completed":
        raise SystemExit(f"training the run to evaluate: {result.status}: {result.reason}")
    return {"seconds": round(time.perf_counter() - t0, 3), "run": str(run), "benchmark": cfg.benchmark,
            "backbone": cfg.backbone, "epochs": epochs}


def table(rows_: list[dict]) -> str:
    by = {r["case"]: r for r in rows_}
    ref = by.get("reference", {}).get("seconds")
    ours = by.get("ours", {}).get("seconds")
    head = next((r for r in rows_ if r["case"] == "ours"), rows_[0])
    s = head["settings"]
    text = [f"{s['benchmark'] if not s.get('run') else s['run']}, {head.get('scorers', '?')} scorers, "
            f"{head.get('grid_points', '?')} grid points{', quick' if head.get('quick') else ''}", ""]
    lines = [(label, f"{by[k]['seconds']:.1f}", f"{ref / by[k]['seconds']:.1f}" if ref else "–")
             for k, label in MODES.items() if k in by]
    if "train" in by:
        t = by["train"]
        lines.append((f"(train: the {t['epochs']}-epoch {t['backbone']} run evaluated)", f"{t['seconds']:.1f}", "–"))
    text.append(rows.markdown(["mode", "seconds", "× faster than reference"], lines, "lrr"))
    own = sorted((r for r in rows_ if r["case"].startswith("alone: ")), key=lambda r: -r["seconds"])
    if own:
        text += ["", "each scorer alone (validation search included), beyond MSP alone (the floor)", ""]
        lines = [(r["scorer"], r["grid_points"], f"{r['seconds']:.1f}", f"{100 * r['seconds'] / ours:.0f}%" if ours else "–")
                 for r in own]
        if FLOOR in by:
            lines.append((FLOOR, 1, f"{by[FLOOR]['seconds']:.1f}", "–"))
        text.append(rows.markdown(["scorer", "grid points", "seconds", "share of ours (no cache)"], lines, "lrrr"))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run directory (default: train one in WORK/run)")
    p.add_argument("--benchmark", default="cmnist")
    p.add_argument("--epochs", type=int, default=2, help="of the run trained without --run")
    p.add_argument("--scorers", default="all", help="comma-separated scorer names, or 'all' (default)")
    p.add_argument("--breakdown", action="store_true", help="also time each scorer alone (ours, cached)")
    rows.add_options(p, "eval-cost", f"a 1-epoch run on {rows.QUICK_BENCHMARK}, energy alone, with the breakdown")
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    if args.quick:
        args.benchmark, args.epochs, args.scorers, args.breakdown = rows.QUICK_BENCHMARK, 1, "energy", True
    from ascood.scorer_names import SCORER_NAMES  # no torch: a finished --resume stays instant

    names = list(SCORER_NAMES) if args.scorers == "all" else [n.strip() for n in args.scorers.split(",")]
    unknown = [n for n in names if n not in SCORER_NAMES]
    if unknown:
        p.error(f"--scorers: unknown {', '.join(unknown)}")
    book = rows.Rows(args)
    run = args.run or args.work / "run"

    def points(n: str) -> int:
        from ascood.scorers import SCORERS

        return len(SCORERS[n].grid_points())

    def meta() -> dict:
        return {"scorers": len(names), "grid_points": sum(points(n) for n in names)}
    cases = [*MODES, *([FLOOR, *(f"alone: {n}" for n in names)] if args.breakdown else [])]
    if args.run is None and book.missing(cases):
        book.measure([("train", lambda: train(run, args.benchmark, args.epochs))],
                     say=lambda r: f"trained {run} in {r['seconds']:.1f} s")

    def say(r: dict) -> str:
        return f"{r['case']}: {r['seconds']:.1f} s"

    book.measure([
        ("ours", lambda: {"seconds": round(alone(run, names, use_cache=False), 3), **meta()}),
        ("cached", lambda: {"seconds": round(alone(run, names, warm=True), 3), **meta()}),
        ("reference", lambda: {"seconds": round(reference(run, names), 3), **meta()}),
    ], say)
    if args.breakdown:
        def floor() -> dict:
            alone(run, ["msp"])  # warm: imports, the data's cache
            return {"seconds": round(min(alone(run, ["msp"]) for _ in range(3)), 3)}

        book.measure([(FLOOR, floor)], say)
        base = book.get(FLOOR)["seconds"]
        book.measure(((f"alone: {n}", lambda n=n: {"scorer": n, "grid_points": points(n),
                                                   "seconds": round(max(0.0, alone(run, [n]) - base), 3)})
                      for n in names), say)
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
