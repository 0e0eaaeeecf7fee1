"""Does the default search find good settings per unit of compute? Random search against TPE,
TPE + ASHA and other candidate defaults, on the three embedded benchmarks.

    python benchmarks/search_efficiency.py [--base sweeps/quickstart.yaml] [--budget 12] [--scale 4]
        [--seeds 0 1 2] [--strategies random,tpe,tpe+asha,...] [--work DIR] [--plot FILE]

Every run is a real sweep (`ascood-sweep`, search stage only, the base file's datasets, trial
settings and space, no tracking): one sweep per strategy and seed, the three datasets side by
side. Compute is counted in trial-epochs (an ASHA-stopped trial counts the epochs it trained).
A strategy's curve is the best validation objective among fully trained trials against the
trial-epochs spent, trials taken in the order they completed.

Compute, not trials, is the budget: a searched strategy may spend `budget × epochs` trial-epochs
(12 full trials by default). A strategy with ASHA stops weak trials early and so starts more
trials in that compute (`--asha-samples`, default twice the budget); its curve is read up to the
allowance, so the trials beyond it only show where the curve would go next.

Random search is run once per dataset with `scale × budget` trials (one pool of i.i.d. draws);
its curve for seed s takes the pool in a random order drawn from s, so its end point (the best
that random search finds with `scale ×` the budget) is the pool's best. The target: the default
reaches that value within 0.5 points using at most 1/scale of random search's compute.

Sweeps already finished under --work are read, not run again, so the benchmark can be extended
(more seeds, another strategy) without paying for what is there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml

from ascood.sweep.paths import results_dir

ASHA = {"name": "asha", "grace_period": 1, "reduction_factor": 2}
ASHA_G2 = {"name": "asha", "grace_period": 2, "reduction_factor": 2}
STRATEGIES = {
    "random": ({"name": "random"}, None),
    "tpe": ({"name": "tpe", "startup_trials": 10}, None),
    "tpe+asha": ({"name": "tpe", "startup_trials": 10}, ASHA),
    "tpe4+asha": ({"name": "tpe", "startup_trials": 4}, ASHA),
    "tpe4": ({"name": "tpe", "startup_trials": 4}, None),
    "tpe+asha-g2": ({"name": "tpe", "startup_trials": 10}, ASHA_G2),
    "gp4+asha": ({"name": "gp", "startup_trials": 4}, ASHA),
    "gp4": ({"name": "gp", "startup_trials": 4}, None),
}
WITHIN = 0.5


def sweep_file(base: dict, strategy: str, seed: int, samples: int, out: Path) -> dict:
    algorithm, scheduler = STRATEGIES[strategy]
    spec = {k: base[k] for k in ("datasets", "trial", "space", "objective", "resources") if k in base}
    return {**spec, "name": f"eff-{strategy.replace('+', '-')}-{seed}", "output": str(out),
            "algorithm": {**algorithm, "seed": seed}, "num_samples": samples, "scheduler": scheduler,
            "final": None, "tracking": "none"}


def starts(strategy: str, budget: int, asha_samples: int | None) -> int:
    """Trials a strategy starts per dataset: the budget without ASHA; with it, enough to spend the
    budget's compute (twice the budget with a first rung at epoch 1, 1.5× with one at epoch 2)."""
    scheduler = STRATEGIES[strategy][1]
    if scheduler is None:
        return budget
    return asha_samples or (2 * budget if scheduler["grace_period"] == 1 else (3 * budget) // 2)


def run(spec: dict, work: Path) -> Path:
    """The sweep's output directory, running the sweep unless it finished before."""
    out = Path(spec["output"])
    done = out.parent / f"{out.name}.done"
    if done.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path), "--fresh", "--no-progress"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{path}: sweep failed:\n{proc.stderr[-3000:]}")
    done.write_text(json.dumps({"name": spec["name"]}))
    return out


def trials(out: Path, name: str, benchmark: str) -> pd.DataFrame:
    """One row per search trial: completion time, epochs trained, final objective (NaN unless
    trained to the end and complete)."""
    study = optuna.load_study(study_name=f"{name}-{benchmark}", storage=f"sqlite:///{out / 'optuna.db'}")
    by_number = {}  # a search trial's file is named by its Optuna trial number: search-0007.parquet
    for path in Path(results_dir(str(out), benchmark)).glob("search-*.parquet"):
        by_number[int(path.stem.split("-")[1])] = int(pd.read_parquet(path)["epoch"].max())
    rows = []
    for t in study.trials:
        if t.datetime_complete is None:
            continue
        trained = by_number.get(t.number, max(t.intermediate_values, default=0))
        value = t.value if t.state == optuna.trial.TrialState.COMPLETE else np.nan
        rows.append({"number": t.number, "done": t.datetime_complete, "epochs": int(trained), "value": value})
    return pd.DataFrame(rows).sort_values("done").reset_index(drop=True)


def curve(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative trial-epochs, best complete value so far) after each trial."""
    return df["epochs"].cumsum().to_numpy(), df["value"].cummax().ffill().to_numpy()


def best_within(x: np.ndarray, y: np.ndarray, budget: float) -> float:
    ok = x <= budget + 1e-9
    return float(np.nanmax(y[ok])) if ok.any() and not np.all(np.isnan(y[ok])) else np.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, default=Path("sweeps/quickstart.yaml"))
    p.add_argument("--budget", type=int, default=12,
                   help="compute of each searched strategy per dataset, in full trials (× the trial's epochs)")
    p.add_argument("--asha-samples", type=int, default=None,
                   help="trials a strategy with ASHA starts per dataset (default: twice --budget, 1.5× with a grace period of 2)")
    p.add_argument("--scale", type=int, default=4, help="random search's budget, in multiples of --budget")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", default="random,tpe,tpe+asha")
    p.add_argument("--default", default="tpe+asha", help="the strategy held to the target")
    p.add_argument("--work", type=Path, default=Path("runs/search-efficiency"))
    p.add_argument("--plot", type=Path, default=Path("benchmarks/figures/search_efficiency.png"))
    args = p.parse_args()

    base = yaml.safe_load(args.base.read_text())
    benchmarks = [d["benchmark"] for d in base["datasets"]]
    epochs = int(base["trial"]["epochs"])
    names = [s.strip() for s in args.strategies.split(",")]
    curves: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for strategy in names:
        if strategy == "random":
            spec = sweep_file(base, "random", 0, args.budget * args.scale, args.work / "random-pool")
            out = run(spec, args.work)
            for b in benchmarks:
                pool = trials(out, spec["name"], b)
                for seed in args.seeds:
                    order = pool.sample(frac=1.0, random_state=seed).reset_index(drop=True)
                    curves.setdefault((strategy, b), []).append(curve(order))
            continue
        samples = starts(strategy, args.budget, args.asha_samples)
        for seed in args.seeds:
            spec = sweep_file(base, strategy, seed, samples, args.work / f"{strategy.replace('+', '-')}-{seed}-n{samples}")
            out = run(spec, args.work)
            for b in benchmarks:
                curves.setdefault((strategy, b), []).append(curve(trials(out, spec["name"], b)))

    full = args.budget * args.scale * epochs  # random search's compute
    allowed = full / args.scale
    started = ", ".join(f"{n} {starts(n, args.budget, args.asha_samples)}" for n in names if n != "random")
    print(f"budget: {allowed:g} trial-epochs per searched strategy ({args.budget} trials × {epochs} epochs; "
          f"trials started: {started}); random search: "
          f"{args.budget * args.scale} trials ({full} trial-epochs); seeds {args.seeds}")
    print()
    print(f"| dataset | strategy | trials within {allowed:g} trial-epochs | trial-epochs spent in all "
          f"| best val objective in all (mean ± std over seeds) "
          f"| best within {allowed:g} trial-epochs | random's best at {full} | reached (≤ {WITHIN} below) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    summary = {}
    for b in benchmarks:
        target = np.nanmean([best_within(x, y, full) for x, y in curves.get(("random", b), [])]) \
            if ("random", b) in curves else np.nan
        for strategy in names:
            runs = curves[(strategy, b)]
            spent = [x[-1] for x, _ in runs]
            best = [np.nanmax(y) for _, y in runs]
            early = [best_within(x, y, allowed) for x, y in runs]
            counted = [int((x <= allowed + 1e-9).sum()) for x, _ in runs]
            reached = sum(e >= target - WITHIN for e in early)
            summary[(b, strategy)] = {"spent": float(np.mean(spent)), "best": float(np.mean(best)),
                                      "within": float(np.nanmean(early)), "reached": reached}
            print(f"| {b} | {strategy} | {np.mean(counted):.1f} | {np.mean(spent):.0f} "
                  f"| {np.mean(best):.2f} ± {np.std(best):.2f} "
                  f"| {np.nanmean(early):.2f} | {target:.2f} | {reached}/{len(runs)} seeds |")
    verdict = all(summary[(b, args.default)]["within"] >= np.nanmean(
        [best_within(x, y, full) for x, y in curves[("random", b)]]) - WITHIN for b in benchmarks) \
        if "random" in names and args.default in names else None
    if verdict is not None:
        print(f"\ndefault {args.default}: target {'met' if verdict else 'missed'} on "
              f"{'every dataset' if verdict else 'at least one dataset'} (mean over seeds)")
    plot(curves, benchmarks, names, full, allowed, args.plot)
    print(f"plot: {args.plot}")


def plot(curves, benchmarks, names, full, allowed, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 3.6), squeeze=False)
    grid = np.arange(1, full + 1)
    for ax, b in zip(axes[0], benchmarks, strict=True):
        for strategy in names:
            ys = []
            for x, y in curves[(strategy, b)]:
                idx = np.searchsorted(x, grid, side="right") - 1
                ys.append(np.where((idx >= 0) & (grid <= x[-1]), y[np.clip(idx, 0, None)], np.nan))  # none past its spend
            ys = np.array(ys)
            with np.errstate(all="ignore"):
                mean = np.nanmean(ys, axis=0)
            ax.plot(grid, mean, label=strategy)
            ax.fill_between(grid, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), alpha=0.15)
        ax.axvline(allowed, color="grey", linestyle=":", linewidth=1)
        ax.set_title(b)
        ax.set_xlabel("trial-epochs spent")
        ax.set_ylabel("best val objective so far")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
