"""Seed noise of the embedded spurious benchmark: one fixed ASCOOD setting trained with several
training seeds (the build seed stays 0), test FPR@95 and AUROC on the spurious OOD set per seed
and as mean ± std (sample std, n−1), ID test accuracy, and the wall time of each run.

    OMP_NUM_THREADS=1 python benchmarks/cmnist_noise.py cmnist --epochs 3 --batch-size 32
    OMP_NUM_THREADS=1 python benchmarks/cmnist_noise.py "cmnist[classes=2]" --epochs 4 --batch-size 32

The numbers are those of the last epoch (every epoch is evaluated, as in a sweep). The benchmark
is built (or read from the cache) once before the first run, so the times are training and
evaluation only: wall and CPU seconds of the process (one thread by default, so CPU time is the
work done, less disturbed than wall time by other load on the machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ascood.config import validate_config
from ascood.data import load_benchmark
from ascood.data.registry import parse_name
from ascood.results import read_results
from ascood.trial import run_trial

SCORERS = ("msp", "energy")


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):6.2f} ± {std:5.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("benchmark", nargs="?", default="cmnist", help='e.g. cmnist, or "cmnist[classes=2]"')
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--alpha", type=float, default=1.0, help="alpha_max = alpha_min")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, help="where the runs go (default: a fresh temporary directory)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="cmnist-noise-"))

    t0 = time.perf_counter()
    data = load_benchmark(args.benchmark)
    build_s = time.perf_counter() - t0
    spurious = [o for o in data.ood if o.group == "spurious"]
    if len(spurious) != 1:
        raise SystemExit(f"{args.benchmark}: expected one spurious OOD set, found {[o.name for o in spurious]}")
    ood_set = spurious[0].name
    asked = parse_name(args.benchmark)[1].get("classes")
    if asked is not None and int(asked) != data.num_classes:
        raise SystemExit(f"{args.benchmark}: built with {data.num_classes} classes, not {asked}: this version of "
                         "ascood.data.registry does not pass a name's parameters to an embedded benchmark")
    print(f"{args.benchmark}: {data.num_classes} classes, train/val/test {len(data.train)}/{len(data.val)}/"
          f"{len(data.test)}, spurious set {ood_set!r} val/test {len(spurious[0].val)}/{len(spurious[0].test)}; "
          f"build or cache read {build_s:.1f} s")
    print(f"setting: small_cnn, ascood, gradient, zscore, alpha {args.alpha}, p_inv 0.1, lambda 1, sigma 0.5, "
          f"lr 0.05, epochs {args.epochs}, batch {args.batch_size}; threads {args.threads}; runs in {out}")

    per_seed: list[dict] = []
    for seed in args.seeds:
        cfg = validate_config(dict(
            benchmark=args.benchmark, backbone="small_cnn", method="ascood", ood_type="gradient",
            feature_norm="zscore", alpha_max=args.alpha, alpha_min=args.alpha, p_inv=0.1, sigma=0.5,
            lr=0.05, epochs=args.epochs, batch_size=args.batch_size, scorers=list(SCORERS), seed=seed,
            **{"lambda": 1.0},
        ))
        run_dir = out / f"seed{seed}"
        t, c = time.perf_counter(), time.process_time()
        result = run_trial(cfg, run_dir, overwrite=True)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if result.status != "completed":
            raise SystemExit(f"seed {seed}: run {result.status}: {result.reason}")
        df = read_results(run_dir / "results.parquet")
        df = df[(df["split"] == "test") & (df["ood_set"] == ood_set) & (df["epoch"] == df["epoch"].max())]
        rec = {"seed": seed, "wall_s": wall, "cpu_s": cpu, "acc": float(df["id_accuracy"].iloc[0])}
        for scorer in SCORERS:
            row = df[df["scorer"] == scorer].iloc[0]
            rec[f"{scorer}/fpr95"], rec[f"{scorer}/auroc"] = float(row["fpr95"]), float(row["auroc"])
        per_seed.append(rec)
        print(f"seed {seed}: ID acc {rec['acc']:6.2f}  "
              + "  ".join(f"{s} FPR@95 {rec[f'{s}/fpr95']:6.2f} AUROC {rec[f'{s}/auroc']:6.2f}" for s in SCORERS)
              + f"  wall {wall:5.1f} s  CPU {cpu:5.1f} s", flush=True)

    print(f"\n{args.benchmark}, test, spurious set {ood_set!r}, mean ± std over seeds {args.seeds}:")
    for scorer in SCORERS:
        print(f"  {scorer:6s} FPR@95 {_mean_std([r[f'{scorer}/fpr95'] for r in per_seed])}   "
              f"AUROC {_mean_std([r[f'{scorer}/auroc'] for r in per_seed])}")
    print(f"  ID test accuracy {_mean_std([r['acc'] for r in per_seed])}")
    print(f"  wall per run     {_mean_std([r['wall_s'] for r in per_seed])} s")
    print(f"  CPU per run      {_mean_std([r['cpu_s'] for r in per_seed])} s")


if __name__ == "__main__":
    main()
