"""Evidence for the cross-dataset question on the embedded default (issue 14, figures in BENCHMARKS.md).

    python benchmarks/robust_evidence.py [--sweep sweeps/quickstart.yaml] [--work DIR] [--full DIR]
        [--resume] [--table] [--quick]

(a) How far apart the best α of each dataset's own search is, as max/min over datasets, when α is
    absolute (as released) and when it is relative (`alpha_scale: relative`). Two search-only
    sweeps with the sweep file's datasets, budget, sampler and scheduler; only α's scale (and its
    range) differ.
(b) From the full sweep (every stage, run here unless its output exists): the worst-case
    normalized gain over CE of the robust stage's pick against the best of the per-dataset
    winners, on the same paired seeds, with the paired difference's 95% interval.

Each sweep's wall time, (a) per parametrization and (b) are rows of `DIR/rows.jsonl` as soon as
each is known (benchmarks/rows.py). A sweep runs `--fresh`, or with `--resume` goes on from where
an interrupted one stopped (its wall time is then that of the last part, `resumed: true`).

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
RELATIVE_ALPHA = {"low": 0.0003, "high": 0.3, "log": True}
WORST = ("worst_gain", "worst_gain_low", "worst_gain_high")


def _run(path: Path, resume: bool = False) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress",
                           "--resume" if resume else "--fresh"], capture_output=True, text=True)
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


def best_alphas(out: Path, objective) -> dict[str, float]:
    from ascood.results import read_results
    from ascood.sweep.summary import best_from_frame

    df = read_results(out / "results")
    best = {}
    for benchmark, bdf in df.groupby("benchmark", sort=False):
        b = best_from_frame(bdf, objective)
        if b is not None:
            best[str(benchmark)] = float(b.params["alpha_max"])
    return best


def robust_vs_winners(out: Path, objective, floor: float) -> dict:
    from ascood.results import read_results
    from ascood.sweep.summary import best_from_frame
    from ascood.verdict import cube, gains, interval, setting_id, transfer_rows, transfer_table, verdict, worst_gain_over

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
    from ascood.verdict import setting_id

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


def _g(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def table(rows_: list[dict]) -> str:
    by = {r["case"]: r for r in rows_}
    text = []
    walls = [(k, r) for k, r in by.items() if k.startswith("sweep: ")]
    if walls:
        text.append(rows.markdown(["sweep", "wall", "resumed"], [(k, f"{r['wall_s']:.0f} s", "yes" if r.get("resumed") else "no")
                                                                 for k, r in walls], "lrl"))
    spreads = [(k, r) for k, r in by.items() if k.startswith("a: ")]
    if spreads:
        names = list(dict.fromkeys(d for _, r in spreads for d in r["best_alpha"]))
        text += ["", "(a) each dataset's best α (its own search, validation objective):", ""]
        text.append(rows.markdown(["parametrization", *names, "max / min"],
                                  [(k, *(_g(r["best_alpha"].get(d), ".3g") for d in names), f"**{r['max_over_min']:,.0f}×**")
                                   for k, r in spreads], "l" + "r" * (len(names) + 1)))
    if "b" in by:
        b = by["b"]

        def gain(v: list) -> str:
            return f"{_g(v[0])} [{_g(v[1])}, {_g(v[2])}]"

        text += ["", f"(b) worst-case normalized gain over CE, seeds {b['seeds']}:", ""]
        text.append(rows.markdown(["b: candidate", "worst-case gain"], [
            (f"robust pick ({b['robust_pick']})", gain(b["robust_worst_gain"])),
            (f"best per-dataset winner ({', '.join(b['winner_of'])}'s: {b['best_winner']})", gain(b["winner_worst_gain"])),
            ("paired difference, robust − winner", gain(b["difference"])),
            ("verdict's pick / tied with it", f"{b['verdict_pick']} / {', '.join(b['verdict_tied']) or 'none'}"),
        ], "lr"))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=Path("sweeps/quickstart.yaml"))
    p.add_argument("--full", type=Path, help="output of the full sweep (default: run it under WORK/full)")
    rows.add_options(p, "evidence", f"one search trial per dataset, one robust trial, one seed, 1 epoch, "
                     f"on {rows.QUICK_BENCHMARK} and mnist6, no final or comparison stage", work=Path("runs/evidence"))
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    book = rows.Rows(args, free=("full",))
    base = yaml.safe_load(args.sweep.read_text())
    if args.quick:
        base = {**rows.quick_sweep(base, datasets=2), "num_samples": 1, "final": None}  # (a) and (b) read no final stage
        base["robust"] = {**base["robust"], "num_samples": 1}
        base["transfer"] = {**base["transfer"], "seeds": [0]}
        for key in ("baselines", "outliers"):
            base.pop(key, None)
    scales = ("absolute", "relative")
    if not book.missing([*(f"a: {s}" for s in scales), "b"]):
        print(table(book.rows))
        return 0
    from ascood.sweep.spec import load_sweep

    path = args.work / "full.yaml"
    full = args.full or args.work / "full"
    path.write_text(yaml.safe_dump({**base, "output": str(full)}))
    spec, _ = load_sweep(path)
    objective = spec.objective

    def sweep(file: Path, out: Path) -> dict:
        return {"wall_s": round(_run(file, args.resume and out.exists()), 1), "output": str(out),
                "resumed": bool(args.resume and out.exists())}

    def say(r: dict) -> str:
        return f"{r['case']}: {r['wall_s']:.0f} s"

    if args.full is None:
        book.measure([("sweep: full", lambda: sweep(path, full))], say)
    for scale in scales:
        out = args.work / f"search-{scale}"
        if scale == "absolute" and spec.trial.get("alpha_scale", "absolute") == "absolute":
            out = full  # the full sweep's own per-dataset searches are the absolute ones
        else:
            book.measure([(f"sweep: search, {scale} α", lambda s=scale, o=out: sweep(search_only(base, args.work, s), o))],
                         say)

        def spread(o: Path = out) -> dict:
            alphas = best_alphas(o, objective)
            return {"best_alpha": alphas, "max_over_min": max(alphas.values()) / min(alphas.values()), "output": str(o)}

        book.measure([(f"a: {scale}", spread)], lambda r: f"{r['case']}: max/min {r['max_over_min']:.1f}")
    floor = spec.robust.gain_floor if spec.robust else 1.0
    book.measure([("b", lambda: robust_vs_winners(full, objective, floor))],
                 lambda r: f"b: robust pick {r['robust_pick']}, best winner {r['best_winner']}")
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
