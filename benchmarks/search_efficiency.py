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

Each sweep's trials (epochs trained, objective, in completion order) are a row of `DIR/rows.jsonl`
as soon as it ends (benchmarks/rows.py); the table is computed from the rows. `--resume` keeps
them and runs only the sweeps missing, so the benchmark can be extended (more seeds, another
strategy) without paying for what is there. Without it the rows start anew, but sweeps already
finished under --work are still read, not run again: their trials do not depend on when they ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import rows
import yaml

# Optuna and ascood are imported where they are used: --table and a finished --resume import neither

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
    import optuna

    from ascood.sweep.paths import results_dir

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


def sweep_row(spec: dict, work: Path, benchmarks: list[str], strategy: str, seed: int, samples: int) -> dict:
    """Run (or read) one sweep; its trials per dataset in the order they completed."""
    out = run(spec, work)
    per = {}
    for b in benchmarks:
        df = trials(out, spec["name"], b)
        per[b] = {"epochs": [int(e) for e in df["epochs"]], "values": [None if np.isnan(v) else float(v) for v in df["value"]]}
    return {"strategy": strategy, "seed": seed, "samples": samples, "output": str(out), "trials": per}


def _frame(t: dict) -> pd.DataFrame:
    return pd.DataFrame({"epochs": t["epochs"], "value": [np.nan if v is None else v for v in t["values"]]})


def curves_of(rows_: list[dict], seeds: list[int]) -> dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]:
    curves: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for r in rows_:
        for b, t in r["trials"].items():
            if r["strategy"] == "random":  # one pool, a random order per seed
                for seed in seeds:
                    order = _frame(t).sample(frac=1.0, random_state=seed).reset_index(drop=True)
                    curves.setdefault(("random", b), []).append(curve(order))
            else:
                curves.setdefault((r["strategy"], b), []).append(curve(_frame(t)))
    return curves


def table(rows_: list[dict]) -> str:
    s = rows_[0]["settings"]
    names = list(dict.fromkeys(r["strategy"] for r in rows_))
    benchmarks = list(dict.fromkeys(b for r in rows_ for b in r["trials"]))
    epochs = rows_[0]["epochs"]
    seeds = sorted({r["seed"] for r in rows_ if r["strategy"] != "random"}) or s["seeds"]  # random's orders: as many
    curves = curves_of(rows_, seeds)
    full = s["budget"] * s["scale"] * epochs  # random search's compute
    allowed = full / s["scale"]
    started = ", ".join(f"{n} {starts(n, s['budget'], s['asha_samples'])}" for n in names if n != "random")
    text = [f"budget: {allowed:g} trial-epochs per searched strategy ({s['budget']} trials × {epochs} epochs; "
            f"trials started: {started}); random search: {s['budget'] * s['scale']} trials ({full} trial-epochs); "
            f"seeds {seeds}{'; quick' if rows_[0].get('quick') else ''}", ""]
    lines, summary = [], {}
    for b in benchmarks:
        target = np.nanmean([best_within(x, y, full) for x, y in curves.get(("random", b), [])]) \
            if ("random", b) in curves else np.nan
        for strategy in names:
            runs = curves.get((strategy, b), [])
            if not runs:
                continue
            spent = [x[-1] for x, _ in runs]
            with np.errstate(all="ignore"):
                best = [np.nanmax(y) if not np.all(np.isnan(y)) else np.nan for _, y in runs]
                early = [best_within(x, y, allowed) for x, y in runs]
            counted = [int((x <= allowed + 1e-9).sum()) for x, _ in runs]
            reached = sum(e >= target - WITHIN for e in early)
            summary[(b, strategy)] = np.nanmean(early) if not np.all(np.isnan(early)) else np.nan
            lines.append((b, strategy, f"{np.mean(counted):.1f}", f"{np.mean(spent):.0f}",
                          f"{np.mean(best):.2f} ± {np.std(best):.2f}", f"{summary[(b, strategy)]:.2f}", f"{target:.2f}",
                          f"{reached}/{len(runs)} seeds"))
    text.append(rows.markdown(["dataset", "strategy", f"trials within {allowed:g} trial-epochs", "trial-epochs spent in all",
                               "best val objective in all (mean ± std over seeds)", f"best within {allowed:g} trial-epochs",
                               f"random's best at {full}", f"reached (≤ {WITHIN} below)"], lines, "llrrrrrl"))
    default = s["default"]
    if "random" in names and default in names:
        met = all(summary[(b, default)] >= np.nanmean([best_within(x, y, full) for x, y in curves[("random", b)]]) - WITHIN
                  for b in benchmarks)
        text.append(f"\ndefault {default}: target {'met' if met else 'missed'} on "
                    f"{'every dataset' if met else 'at least one dataset'} (mean over seeds)")
    text.append("\ncases: " + ", ".join(r["case"] for r in rows_))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--plot", type=Path, default=Path("benchmarks/figures/search_efficiency.png"),
                   help="(with --quick: WORK/search_efficiency.png)")
    rows.add_options(p, "search-efficiency", f"random and tpe+asha, budget 2, scale 2, one seed, 1 epoch, on "
                     f"{rows.QUICK_BENCHMARK}", work=Path("runs/search-efficiency"))
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    base = yaml.safe_load(args.base.read_text())
    if args.quick:
        base = rows.quick_sweep(base)
        args.strategies, args.budget, args.scale, args.seeds = "random,tpe+asha", 2, 2, [0]
        args.plot = args.work / "search_efficiency.png"
    book = rows.Rows(args, free=("seeds", "strategies", "plot"))
    benchmarks = [d["benchmark"] for d in base["datasets"]]
    epochs = int(base["trial"]["epochs"])
    names = [s.strip() for s in args.strategies.split(",")]
    plan = []  # (case, strategy, seed, samples, output)
    for strategy in names:
        if strategy == "random":
            plan.append(("random pool", strategy, 0, args.budget * args.scale, args.work / "random-pool"))
            continue
        samples = starts(strategy, args.budget, args.asha_samples)
        plan += [(f"{strategy} seed {seed}", strategy, seed, samples,
                  args.work / f"{strategy.replace('+', '-')}-{seed}-n{samples}") for seed in args.seeds]
    new = book.measure(((case, lambda st=st, seed=seed, n=n, out=out: {
        **sweep_row(sweep_file(base, st, seed, n, out), args.work, benchmarks, st, seed, n), "epochs": epochs})
        for case, st, seed, n, out in plan),
        say=lambda r: f"{r['case']}: " + ", ".join(f"{b} {len(t['epochs'])} trials" for b, t in r["trials"].items()))
    wanted = {case for case, *_ in plan}
    mine = [r for r in book.rows if r["case"] in wanted]
    print(table(mine))
    if new or not args.plot.exists():
        plot(curves_of(mine, args.seeds), benchmarks, names, args.budget * args.scale * epochs, args.budget * epochs,
             args.plot)
    print(f"plot: {args.plot}")
    return 0


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
    sys.exit(main())
