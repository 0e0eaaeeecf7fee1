"""Seed noise of the embedded spurious benchmark: one fixed ASCOOD setting trained with several
training seeds (the build seed stays 0), test FPR@95 and AUROC on the spurious OOD set per seed
and as mean ± std (sample std, n−1), ID test accuracy, and the wall time of each run.

    OMP_NUM_THREADS=1 python benchmarks/cmnist_noise.py cmnist --epochs 3 --batch-size 32
    OMP_NUM_THREADS=1 python benchmarks/cmnist_noise.py "cmnist[classes=2]" --epochs 4 --batch-size 32
    python benchmarks/cmnist_noise.py … [--work DIR] [--resume] [--table] [--quick]

The numbers are those of the last epoch (every epoch is evaluated, as in a sweep). The benchmark
is built (or read from the cache) once before the first run, so the times are training and
evaluation only: wall and CPU seconds of the process (one thread by default, so CPU time is the
work done, less disturbed than wall time by other load on the machine). Each seed is a row in
`DIR/rows.jsonl` as soon as its run ends (benchmarks/rows.py): `--resume` trains only the seeds
not there, also further seeds beside them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import rows

# torch and ascood are imported where they are used: --table and a finished --resume import neither
SCORERS = ("msp", "energy")


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):6.2f} ± {std:5.2f}"


def table(rows_: list[dict]) -> str:
    """One line per seed, then mean ± std over them (sample std)."""
    header = ["seed", "ID test acc", *(f"{s} FPR@95" for s in SCORERS), *(f"{s} AUROC" for s in SCORERS), "wall s", "CPU s"]
    cols = ["acc", *(f"{s}/fpr95" for s in SCORERS), *(f"{s}/auroc" for s in SCORERS), "wall_s", "cpu_s"]
    lines = [(str(r["seed"]), *(f"{r[c]:.2f}" for c in cols)) for r in rows_]
    lines.append((f"mean ± std ({len(rows_)} seeds)", *(" ± ".join(x.strip() for x in _mean_std([r[c] for r in rows_]).split("±"))
                                                       for c in cols)))
    s = rows_[0]["settings"]
    head = (f"{s['benchmark']}, test, spurious set {rows_[0].get('ood_set')!r}, {s['epochs']} epochs, batch "
            f"{s['batch_size']}, α {s['alpha']}, {s['threads']} thread(s){', quick' if rows_[0].get('quick') else ''}")
    return head + "\n\n" + rows.markdown(header, lines, "l" + "r" * (len(header) - 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("benchmark", nargs="?", default="cmnist", help='e.g. cmnist, or "cmnist[classes=2]"')
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--alpha", type=float, default=1.0, help="alpha_max = alpha_min")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, help="where the runs go (default: WORK/runs)")
    rows.add_options(p, "cmnist-noise", f"{rows.QUICK_BENCHMARK}, one seed, one epoch")
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    if args.quick:
        args.benchmark, args.seeds, args.epochs = rows.QUICK_BENCHMARK, [0], 1
    book = rows.Rows(args, key="seed", free=("seeds", "out"))
    if book.missing(args.seeds):
        measure(args, book)
    print(table([r for s in args.seeds for r in book.rows if r["seed"] == s]))
    return 0


def measure(args: argparse.Namespace, book: rows.Rows) -> None:
    import torch

    from ascood.config import validate_config
    from ascood.data import load_benchmark
    from ascood.data.registry import parse_name
    from ascood.results import read_results
    from ascood.trial import run_trial

    torch.set_num_threads(args.threads)
    out = args.out or args.work / "runs"

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
          f"lr 0.05, epochs {args.epochs}, batch {args.batch_size}; threads {args.threads}; runs in {out}", flush=True)

    def one(seed: int) -> dict:
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
        rec = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "acc": float(df["id_accuracy"].iloc[0]),
               "ood_set": ood_set, "run": str(run_dir), "classes": data.num_classes}
        for scorer in SCORERS:
            row = df[df["scorer"] == scorer].iloc[0]
            rec[f"{scorer}/fpr95"], rec[f"{scorer}/auroc"] = float(row["fpr95"]), float(row["auroc"])
        return rec

    def say(rec: dict) -> str:
        return (f"seed {rec['seed']}: ID acc {rec['acc']:6.2f}  "
                + "  ".join(f"{s} FPR@95 {rec[f'{s}/fpr95']:6.2f} AUROC {rec[f'{s}/auroc']:6.2f}" for s in SCORERS)
                + f"  wall {rec['wall_s']:5.1f} s  CPU {rec['cpu_s']:5.1f} s")

    book.measure(((seed, lambda seed=seed: one(seed)) for seed in args.seeds), say)


if __name__ == "__main__":
    sys.exit(main())
