"""Evidence for the cross-dataset question on the embedded default (issue 14, figures in BENCHMARKS.md).

    python benchmarks/robust_evidence.py [--sweep sweeps/quickstart.yaml] [--work DIR]

(a) How far apart the best α of each dataset's own search is, as max/min over datasets, when α is
    absolute (as released) and when it is relative (`alpha_scale: relative`). Two search-only
    sweeps with the sweep file's datasets, budget, sampler and scheduler; only α's scale (and its
    range) differ.
(b) From the full sweep (every stage, run here unless its output exists): the worst-case
    normalized gain over CE of the robust stage's pick against the best of the per-dataset
    winners, on the same paired seeds, with the paired difference's 95% interval.

Embedded benchmarks: a demo and a test bed, not results on the paper's benchmarks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ascood.results import read_results
from ascood.sweep.spec import Objective, load_sweep
from ascood.sweep.summary import best_from_frame
from ascood.verdict import (
    cube,
    gains,
    interval,
    setting_id,
    transfer_rows,
    transfer_table,
    verdict,
    worst_gain_over,
)

RELATIVE_ALPHA = {"low": 0.0003, "high": 0.3, "log": True}
WORST = ("worst_gain", "worst_gain_low", "worst_gain_high")


def _run(path: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{path}: the sweep failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def search_only(base: dict, work: Path, scale: str) -> Path:
    """A copy of the sweep with only its per-dataset searches, α absolute or relative."""
    data = {k: v for k, v in base.items() if k not in ("final", "transfer", "robust")}
    data.update(name=f"evidence-{scale}", output=str(work / f"search-{scale}"), final=None)
    data["trial"] = {**data.get("trial", {}), "alpha_scale": scale}
    if scale == "relative":
        data["space"] = {**data["space"], "alpha": RELATIVE_ALPHA}
    path = work / f"search-{scale}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def best_alphas(out: Path, objective: Objective) -> dict[str, float]:
    df = read_results(out / "results")
    best = {}
    for benchmark, bdf in df.groupby("benchmark", sort=False):
        b = best_from_frame(bdf, objective)
        if b is not None:
            best[str(benchmark)] = float(b.params["alpha_max"])
    return best


def robust_vs_winners(out: Path, objective: Objective, floor: float) -> dict:
    df = read_results(out / "results")
    table = transfer_table(transfer_rows(df), objective)
    v = verdict(table, metric=objective.name, floor=floor)
    c = cube(table)
    winners = {}
    for benchmark, bdf in df.groupby("benchmark", sort=False):
        b = best_from_frame(bdf, objective)
        if b is not None and setting_id(b.params) in c.candidates:
            winners[str(benchmark)] = setting_id(b.params)
    robust = select_robust(df, c.candidates)
    g = gains(c, metric=objective.name, floor=floor)
    t = v.table.set_index("setting")
    best_winner = max(set(winners.values()), key=lambda s: t.loc[s, "worst_gain"])
    i, j = c.candidates.index(robust), c.candidates.index(best_winner)
    diff, lo, hi = interval(lambda idx: worst_gain_over(g, idx)[[i]] - worst_gain_over(g, idx)[[j]], len(c.seeds),
                            n_resamples=9999, seed=0)
    return {
        "seeds": c.seeds,
        "robust_pick": robust, "robust_worst_gain": [float(t.loc[robust, k]) for k in WORST],
        "best_winner": best_winner, "winner_of": [d for d, s in winners.items() if s == best_winner],
        "winner_worst_gain": [float(t.loc[best_winner, k]) for k in WORST],
        "difference": [float(diff[0]), float(lo[0]), float(hi[0])],
        "verdict_pick": v.pick, "verdict_tied": v.tied,
    }


def select_robust(df, candidates: list[str]) -> str:
    """The robust stage's best joint trial's setting (as handed to the transfer stage)."""
    rows = df[(df["stage"] == "robust") & df["norm_gain"].notna() & (df["status"] == "completed")]
    rows = rows[rows["epoch"] == rows.groupby("trial_id")["epoch"].transform("max")]
    per = rows.drop_duplicates(["trial_id", "benchmark"]).groupby("trial_id")
    n = rows["benchmark"].nunique()
    worst = {t: g["norm_gain"].min() for t, g in per if g["benchmark"].nunique() == n}
    top = max(worst, key=worst.get)
    setting = setting_id(rows[rows["trial_id"] == top].iloc[0])
    if setting not in candidates:
        raise SystemExit(f"the robust pick {setting} is not among the transfer candidates")
    return setting


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=Path("sweeps/quickstart.yaml"))
    p.add_argument("--work", type=Path, default=Path("runs/evidence"))
    p.add_argument("--full", type=Path, help="output of the full sweep (default: run it under WORK/full)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    spec, _ = load_sweep(args.sweep)
    base = yaml.safe_load(args.sweep.read_text())
    objective = spec.objective
    report: dict = {"machine": "2 CPU cores (no GPU)", "sweep": str(args.sweep)}
    full = args.full
    if full is None:
        full = args.work / "full"
        if not (full / "results").exists():
            data = {**base, "output": str(full)}
            path = args.work / "full.yaml"
            path.write_text(yaml.safe_dump(data))
            report["full_sweep_wall_s"] = round(_run(path), 1)
    spreads = {}
    for scale in ("absolute", "relative"):
        out = args.work / f"search-{scale}"
        if scale == "absolute" and (full / "results").exists() and spec.trial.get("alpha_scale", "absolute") == "absolute":
            out = full  # the full sweep's own per-dataset searches are the absolute ones
        elif not (out / "results").exists():
            report[f"search_{scale}_wall_s"] = round(_run(search_only(base, args.work, scale)), 1)
        alphas = best_alphas(out, objective)
        spreads[scale] = {"best_alpha": alphas, "max_over_min": max(alphas.values()) / min(alphas.values())}
    report["a_best_alpha_spread"] = spreads
    floor = spec.robust.gain_floor if spec.robust else 1.0
    report["b_robust_vs_per_dataset_winners"] = robust_vs_winners(full, objective, floor)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
