"""`ascood-sweep report OUT…`: what holds up across spurious, fine-grained and conventional data.

Reads the Parquet results (and each output's sweep.yaml for the objective, optuna.db for the
studies) and writes: report.html (self-contained, PNG plots inlined), the PNGs, picks.csv /
picks.parquet, summary.json. Only validation metrics choose; test metrics are reported.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.load import AnalysisInputError, load_sweeps, setting_id
from ascood.comparison import ASCOOD_PICK, delta_text, method_comparison
from ascood.config import validate_config
from ascood.gain import DEFAULT_FLOOR
from ascood.results import METRICS, SETTING_COLUMNS, select
from ascood.sweep.spec import Objective, SweepFileError, SweepSpec, load_sweep, normalize_trial_keys
from ascood.sweep.summary import best_from_frame, summarize_frame
from ascood.verdict import CE, Verdict, delta_to_ce, raced_verdict, transfer_rows, transfer_table

PLOTTED = ("alpha_max", "p_inv", "lam", "sigma")


@dataclass
class Report:
    objective: Objective
    datasets: list[str]
    per_dataset: pd.DataFrame
    floor: float = DEFAULT_FLOOR
    verdict: Verdict | None = None
    before_race: Verdict | None = None  # every candidate at the seeds all share, when a race added seeds
    labels: dict[str, str] = field(default_factory=dict)  # setting → short label (S1, S2, …, CE)
    legend: pd.DataFrame | None = None  # label, where the candidate came from, its setting
    deltas: pd.DataFrame | None = None  # per dataset: the pick against CE on validation
    candidates: pd.DataFrame | None = None  # every transfer setting's test metrics per dataset
    alpha: pd.DataFrame | None = None  # each relative-α candidate's α as each dataset's mean effective α
    joint: pd.DataFrame | None = None  # per robust-stage trial: its normalized gain on each dataset
    incomplete: list[str] = field(default_factory=list)  # settings left out: not measured on every dataset
    importance: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    comparison: pd.DataFrame | None = None  # ASCOOD's pick against the baseline methods (ascood.comparison)

    @property
    def pick(self) -> str | None:
        return None if self.verdict is None else self.verdict.pick


def _specs(outputs: list[Path]) -> list[SweepSpec]:
    specs = []
    for out in outputs:
        try:
            spec, _ = load_sweep(Path(out) / "sweep.yaml")
        except SweepFileError as exc:
            raise AnalysisInputError(str(exc)) from None
        specs.append(spec)
    if any(s.objective != specs[0].objective for s in specs):
        raise AnalysisInputError("the sweeps optimise different objectives; report them separately")
    floors = {s.robust.gain_floor if s.robust else DEFAULT_FLOOR for s in specs}
    if len(floors) > 1:
        raise AnalysisInputError("the sweeps normalize gains with different robust.gain_floor; report them separately")
    return specs


def _metric_by(rows: pd.DataFrame, objective: Objective, split: str, keys: list[str]) -> pd.DataFrame:
    """Per group of `keys`: objective scorer's metrics averaged over the selected OOD sets."""
    sel = select(rows, split=split, scorer=objective.scorer, ood=objective.ood)
    return sel.groupby(keys)[[*METRICS, "id_accuracy"]].mean().reset_index()


def _test_of_settings(rows: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    per_seed = _metric_by(rows, objective, "test", ["benchmark", "setting", "seed"])
    agg = per_seed.groupby(["benchmark", "setting"]).agg(
        test_auroc=("auroc", "mean"), test_auroc_std=("auroc", lambda x: float(np.std(x))),
        test_fpr95=("fpr95", "mean"), test_fpr95_std=("fpr95", lambda x: float(np.std(x))),
        test_id_accuracy=("id_accuracy", "mean"), seeds=("seed", "nunique"),
    )
    return agg.reset_index()


def per_dataset_table(df: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    rows = []
    for _, sweep_df in df.groupby("sweep_dir", sort=False):
        for s in summarize_frame(sweep_df, objective):
            rec = {"dataset": s.benchmark, "setting": s.setting, "trials": sum(s.trials.values())}
            if s.best is not None:
                rec["best_val"] = s.best.objective
                rec.update({k: (v.item() if hasattr(v, "item") else v) for k, v in s.best.params.items()})
            for k, (m, sd) in s.final.items():
                rec[f"final_test_{k}"], rec[f"final_test_{k}_std"] = m, sd
            rows.append(rec)
    return pd.DataFrame(rows)


def importance(outputs: list[Path], datasets: list[str]) -> dict[str, dict[str, float]]:
    """Optuna's parameter importance per dataset, from the studies each sweep stored."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, dict[str, float]] = {}
    for sweep_out in outputs:
        db = Path(sweep_out) / "optuna.db"
        if not db.exists():
            continue
        storage = f"sqlite:///{db}"
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            dataset = next((d for d in datasets if summary.study_name.endswith(f"-{d}")), summary.study_name)
            completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if len(completed) < 2 or len(study.directions) > 1:
                continue
            try:
                out[dataset] = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
            except (RuntimeError, ValueError):
                continue
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def marginal_plot(df: pd.DataFrame, objective: Objective, path: Path) -> Path:
    """Validation objective of every completed search trial against each searched parameter."""
    search = select(df, stage="search", completed=True, final_epoch=True)
    val = _metric_by(search, objective, "val", ["benchmark", "trial_id", *SETTING_COLUMNS])
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3.4), squeeze=False)
    for ax, param in zip(axes[0], PLOTTED, strict=True):
        for dataset, g in val.groupby("benchmark"):
            ax.scatter(g[param], g[objective.name], label=dataset, s=18, alpha=0.8)
        if param == "alpha_max":
            ax.set_xscale("log")
        ax.set_xlabel("α" if param == "alpha_max" else param)
        ax.set_ylabel(f"val {objective.name} ({objective.scorer})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def pareto_plot(df: pd.DataFrame, objective: Objective, path: Path) -> Path:
    """ID accuracy against validation OOD AUROC per search trial, with each dataset's Pareto front."""
    search = select(df, stage="search", completed=True, final_epoch=True)
    val = _metric_by(search, objective, "val", ["benchmark", "trial_id"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for dataset, g in val.groupby("benchmark"):
        pts = g[["auroc", "id_accuracy"]].to_numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=18, alpha=0.7, label=dataset)
        dominated = [((pts >= p).all(axis=1) & (pts > p).any(axis=1)).any() for p in pts]
        front = pts[[not d for d in dominated]]
        front = front[np.argsort(front[:, 0])]
        ax.plot(front[:, 0], front[:, 1], "-", lw=1)
    ax.set_xlabel(f"val OOD AUROC ({objective.scorer})")
    ax.set_ylabel("val ID accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def gains_plot(r: Report, path: Path) -> Path:
    """Each candidate's worst-case score with its interval, labelled S1, S2, …"""
    v = r.verdict
    t = v.table
    key, low, high = (("worst_gain", "worst_gain_low", "worst_gain_high") if v.criterion == "gain"
                      else ("worst_regret", "worst_regret_low", "worst_regret_high"))
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(t) + 1.4))
    y = np.arange(len(t))
    err = np.vstack([t[key] - t[low], t[high] - t[key]]) if t[low].notna().all() else None
    colors = ["#d62728" if s == v.pick else "#ff7f0e" if tied else "#1f77b4"
              for s, tied in zip(t["setting"], t["tied"], strict=True)]
    ax.barh(y, t[key], xerr=err, color=colors, capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels([r.labels[s] for s in t["setting"]])
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("worst-case normalized gain over CE (validation)" if v.criterion == "gain"
                  else "worst-case validation regret")
    ax.set_title("red: pick · orange: tied with it · bars: 95% bootstrap interval over seeds", fontsize=8)
    return _save(fig, path)


def joint_plot(joint: pd.DataFrame, datasets: list[str], highlight: set[str], path: Path) -> Path:
    """Parallel coordinates: one line per robust-stage trial, its normalized gain on each dataset."""
    fig, ax = plt.subplots(figsize=(1.8 * len(datasets) + 2.5, 3.8))
    x = np.arange(len(datasets))
    for _, row in joint.iterrows():
        top = row["setting"] in highlight
        ax.plot(x, [row[d] for d in datasets], "-o", ms=3, lw=2.2 if top else 0.8, alpha=1 if top else 0.45,
                color="#d62728" if top else "#1f77b4", zorder=3 if top else 2)
    ax.set_xticks(x)
    ax.set_xticklabels(datasets)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("normalized gain over CE (val)")
    ax.set_title("robust-stage trials (red: handed to the transfer candidates; "
                 "lines end where ASHA stopped a trial)", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def joint_table(df: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Per robust-stage setting (one joint trial; a trial continued after a crash under a new Tune
    id is still one setting): normalized gain per dataset and the worst case, best first."""
    rows = select(df, stage="robust", completed=True, final_epoch=True)
    rows = rows[rows["norm_gain"].notna()]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(setting=[setting_id(r) for _, r in rows.iterrows()]).drop_duplicates(["setting", "benchmark"])
    table = rows.pivot_table(index="setting", columns="benchmark", values="norm_gain")
    table = table.reindex(columns=[d for d in datasets if d in table.columns])
    table["complete"] = table.notna().all(axis=1)  # False: stopped early (ASHA) or failed on a later dataset
    table["worst"] = table.drop(columns="complete").min(axis=1)  # over the datasets it reached
    return table.sort_values(["complete", "worst"], ascending=False).reset_index()


def origins(df: pd.DataFrame, specs: list[SweepSpec], objective: Objective, joint: pd.DataFrame) -> dict[str, list[str]]:
    """setting → where it entered the candidates (robust search, best on a dataset, the default)."""
    out: dict[str, list[str]] = {}
    top_k = max((s.robust.top_k for s in specs if s.robust), default=0)
    done = joint[joint["complete"]] if not joint.empty else joint
    for i, setting in enumerate(done["setting"][:top_k] if not done.empty else []):
        out.setdefault(setting, []).append(f"robust search #{i + 1}")
    for benchmark, bdf in df.groupby("benchmark", sort=False):
        best = best_from_frame(bdf, objective)
        if best is not None:
            out.setdefault(setting_id(best.params), []).append(f"best on {benchmark}")
    for spec in specs:
        base = validate_config({**normalize_trial_keys(spec.trial), "benchmark": spec.datasets[0].benchmark})
        out.setdefault(setting_id({k: getattr(base, k) for k in SETTING_COLUMNS}), []).append("sweep default")
    out[CE] = ["plain cross-entropy"]
    return out


def alpha_table(df: pd.DataFrame, transfer: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame | None:
    """What each relative-α candidate's α meant on each dataset: the effective (absolute) α it
    applied, averaged over every evaluated epoch of its transfer runs (min and max of those epochs)."""
    out = []
    for setting, runs in transfer[transfer["alpha_scale"] == "relative"].groupby("setting", sort=False):
        rows = df[df["run_id"].isin(runs["run_id"]) & df["alpha_eff"].notna()].drop_duplicates(["run_id", "epoch"])
        if rows.empty:
            continue
        per = rows.groupby("benchmark", sort=False)["alpha_eff"].agg(["mean", "min", "max"]).reset_index()
        per.insert(0, "label", labels.get(setting, setting))
        per.insert(2, "relative α", runs["alpha_max"].iloc[0])
        out.append(per)
    if not out:
        return None
    return pd.concat(out).rename(columns={"benchmark": "dataset", "mean": "mean effective α", "min": "min (epoch)",
                                          "max": "max (epoch)"})


def build_report(outputs: list[Path], out_dir: Path, *, bootstrap: int = 9999) -> Report:
    outputs = [Path(o) for o in outputs]
    df = load_sweeps(outputs)
    specs = _specs(outputs)
    objective = specs[0].objective
    floor = specs[0].robust.gain_floor if specs[0].robust else DEFAULT_FLOOR
    found = set(df["benchmark"])  # the sweep files' order (a joint trial's), then any other found
    datasets = [d for d in dict.fromkeys(d.benchmark for s in specs for d in s.datasets) if d in found]
    datasets += [d for d in dict.fromkeys(df["benchmark"]) if d not in datasets]
    report = Report(objective, datasets, per_dataset_table(df, objective), floor=floor)
    out_dir.mkdir(parents=True, exist_ok=True)
    joint = joint_table(df, datasets)
    report.joint = joint if not joint.empty else None
    transfer = transfer_rows(df)
    table = transfer_table(transfer, objective)
    measured = table.groupby("setting")["dataset"].nunique()
    report.incomplete = sorted(measured.index[measured < table["dataset"].nunique()])
    table = table[~table["setting"].isin(report.incomplete)]  # a failed transfer run leaves a gap
    if not table.empty:
        first, raced = raced_verdict(table, metric=objective.name, floor=floor, n_resamples=bootstrap)
        v = raced or first
        report.verdict, report.before_race = v, first if raced else None
        numbered = iter(range(1, len(first.table) + 1))
        report.labels = {s: "CE" if s == CE else f"S{next(numbered)}" for s in first.table["setting"]}
        where = origins(df, specs, objective, joint)
        report.legend = pd.DataFrame([
            {"label": report.labels[s], "candidate of": ", ".join(where.get(s, ["—"])), "setting": s}
            for s in first.table["setting"]
        ])
        if CE in v.table["setting"].to_numpy():
            finalists = table[table["setting"].isin(v.table["setting"])]
            report.deltas = delta_to_ce(finalists, v.pick, n_resamples=bootstrap)
        tests = _test_of_settings(transfer, objective)
        tests.insert(0, "label", tests["setting"].map(report.labels))
        report.candidates = tests
        report.alpha = alpha_table(df, transfer, report.labels)
        report.plots["gains"] = gains_plot(report, out_dir / "gains.png")
        picks = v.table.copy()
        picks.insert(0, "label", picks["setting"].map(report.labels))
        picks["robust_pick"] = picks["setting"] == v.pick
        picks.to_csv(out_dir / "picks.csv", index=False)
        picks.to_parquet(out_dir / "picks.parquet")
    if report.joint is not None:
        done = report.joint[report.joint["complete"]]
        top = set(done["setting"][: max((s.robust.top_k for s in specs if s.robust), default=1)])
        report.plots["joint"] = joint_plot(report.joint, [d for d in datasets if d in report.joint.columns], top,
                                           out_dir / "joint.png")
    report.importance = importance(outputs, datasets)
    if not select(df, stage="comparison").empty:
        report.comparison = method_comparison(df, objective)
        report.comparison.to_csv(out_dir / "comparison.csv", index=False)
    if not select(df, stage="search", completed=True).empty:
        report.plots["marginal"] = marginal_plot(df, objective, out_dir / "marginal.png")
        report.plots["pareto"] = pareto_plot(df, objective, out_dir / "pareto.png")
    (out_dir / "summary.json").write_text(summary_json(report))
    (out_dir / "report.html").write_text(render_html(report))
    return report


def ci_text(point: float, low: float, high: float, digits: int = 2) -> str:
    if not np.isfinite(low):
        return f"{point:.{digits}f} (no interval: one seed)"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def verdict_sentences(r: Report) -> list[str]:
    """The answer in words: the pick, its score with interval, the tied set, whether anything separates."""
    v = r.verdict
    if v is None:
        return ["No transfer stage in these results: add transfer: to the sweep file to measure every "
                "candidate on every dataset (and robust: for a cross-dataset search)."]
    row = v.table.set_index("setting").loc[v.pick]
    label = r.labels[v.pick]
    n = len(v.seeds)
    if v.criterion == "gain":
        interval = ci_text(row["worst_gain"], row["worst_gain_low"], row["worst_gain_high"])
        score = (f"its worst-case normalized gain over plain CE is {interval} "
                 f"(share of CE's headroom closed on its worst dataset; 95% bootstrap interval over {n} paired seeds)")
    else:
        interval = ci_text(row["worst_regret"], row["worst_regret_low"], row["worst_regret_high"])
        score = (f"its worst-case validation regret is {interval} "
                 f"points (no CE baseline measured, so no normalized gain; {n} seeds)")
    out = [f"Pick: {label} ({', '.join(r.legend.set_index('label').loc[label, ['candidate of']])}): {score}."]
    tied = [r.labels[s] for s in v.tied]
    if n < 2:
        out.append("With one seed no candidate can be told apart from another: add seeds.")
    elif not v.separates:
        others = ", ".join(t for t in tied if t != "CE")
        out.append(f"No candidate separates: every other setting ({others}) is statistically tied with {label} "
                   "(the interval of the paired difference covers 0). More seeds are needed to choose among them.")
    elif tied:
        out.append(f"Statistically tied with {label}: {', '.join(tied)} (interval of the paired difference covers 0); "
                   "the others are worse.")
    else:
        out.append(f"No other candidate is tied with {label}: each is worse by an interval that excludes 0.")
    if CE in v.tied:
        out.append(f"{label} does not separate from plain CE at these seeds.")
    if 2 <= n <= 5:
        out.append(f"Few seeds: with {n} seeds a difference of the same sign at every seed already puts 0 outside its "
                   f"interval, which chance alone does with probability {2 ** (1 - n):.0%} when there is no "
                   "difference; treat separations as provisional (transfer.max_seeds races more seeds).")
    if v.eliminated:
        first = r.before_race
        out.append(f"Racing: {len(v.seeds)} seeds for the finalists ({', '.join(r.labels[s] for s in v.table['setting'])}); "
                   f"{', '.join(r.labels[s] for s in v.eliminated)} left the race earlier, separated from the leader at "
                   f"{len(first.seeds)} seeds.")
    if v.dropped_seeds:
        out.append(f"Seeds {v.dropped_seeds} were left out: not measured for every candidate on every dataset.")
    return out


def summary_json(r: Report) -> str:
    v = r.verdict
    data = {
        "objective": r.objective.model_dump(),
        "datasets": r.datasets,
        "verdict": verdict_sentences(r),
        "robust_pick": None if v is None else v.pick,
        "robust_pick_label": None if v is None else r.labels[v.pick],
        "criterion": None if v is None else v.criterion,
        "tied_with_pick": None if v is None else v.tied,
        "eliminated_in_race": None if v is None else list(v.eliminated),
        "separates": None if v is None else v.separates,
        "seeds": None if v is None else v.seeds,
        "gain_floor": r.floor,
        "candidates": None if v is None else json.loads(v.table.to_json(orient="records")),
        "labels": r.labels,
        "pick_vs_ce": None if r.deltas is None else json.loads(r.deltas.to_json(orient="records")),
        "alpha_translation": None if r.alpha is None else json.loads(r.alpha.to_json(orient="records")),
        "per_dataset": json.loads(r.per_dataset.to_json(orient="records")),
        "robust_trials": None if r.joint is None else json.loads(r.joint.to_json(orient="records")),
        "left_out_incomplete_settings": r.incomplete,
        "importance": r.importance,
        "method_comparison": None if r.comparison is None else json.loads(r.comparison.to_json(orient="records")),
    }
    return json.dumps(data, indent=2)


HEADERS = {
    "benchmark": "dataset", "dataset": "dataset", "test_auroc": "test AUROC", "test_fpr95": "test FPR@95",
    "test_id_accuracy": "test ID acc", "seeds": "seeds", "best_val": "best val", "trials": "trials",
}


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def comparison_html(c: pd.DataFrame, o: Objective, table) -> list[str]:
    """The method-comparison section: per dataset, one row per OOD group and method."""
    parts = ["<h2>ASCOOD against the baseline methods</h2>",
             f"<p>Test metrics of <b>{html.escape(o.scorer)}</b>, mean ± std (population) over seeds. "
             f"{html.escape(ASCOOD_PICK)} is each dataset's final stage (its own search's best setting on validation); "
             "every baseline trains with the same seeds, and Δ = baseline − pick is the mean paired difference in points "
             "with its 95% t interval (for FPR@95, lower is better: a negative Δ favours the baseline).</p>"]
    for benchmark, g in c.groupby("benchmark", sort=False):
        show = pd.DataFrame({
            "OOD group": g["group"], "method": g["method"], "seeds": g["seeds"],
            "test AUROC": [_pm(a, b) for a, b in zip(g["auroc"], g["auroc_std"], strict=True)],
            "Δ AUROC [95%]": [delta_text(*x) for x in g[["delta_auroc", "delta_auroc_low", "delta_auroc_high"]].to_numpy()],
            "test FPR@95": [_pm(a, b) for a, b in zip(g["fpr95"], g["fpr95_std"], strict=True)],
            "Δ FPR@95 [95%]": [delta_text(*x) for x in g[["delta_fpr95", "delta_fpr95_low", "delta_fpr95_high"]].to_numpy()],
            "ID acc": [_pm(a, b) for a, b in zip(g["id_accuracy"], g["id_accuracy_std"], strict=True)],
        })
        parts += [f"<h3>{html.escape(str(benchmark))}</h3>", table(show)]
    return parts


def render_html(r: Report) -> str:
    def table(df: pd.DataFrame) -> str:
        return df.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0, escape=True)

    def img(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'

    o = r.objective
    parts = [
        "<!doctype html><meta charset='utf-8'><title>ASCOOD cross-setting report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}.verdict{font-size:1.1em;background:#f4f6fa;"
        "padding:.8em 1em;border-left:4px solid #d62728}@media print{body{max-width:none}img{page-break-inside:avoid}}</style>",
        "<h1>Which ASCOOD settings hold up across datasets</h1>",
        "<div class='verdict'>" + "".join(f"<p>{html.escape(s)}</p>" for s in verdict_sentences(r)) + "</div>",
        f"<p>Chosen on validation only: <b>{html.escape(o.metric)}</b> of <b>{html.escape(o.scorer)}</b> over "
        f"{html.escape(o.ood)} OOD sets. Normalized gain on dataset d: g = (v − ce)/(100 − ce) for higher-is-better "
        f"metrics, (ce − v)/ce for FPR@95, the denominator floored at {r.floor:g} point(s); ce is plain CE with the same "
        "seed. A candidate's score is its worst dataset's seed-mean gain. Intervals: 95% percentile bootstrap over "
        "seeds (scipy.stats.bootstrap), seeds resampled jointly for all candidates and datasets; two candidates are "
        "tied when the interval of their paired difference covers 0.</p>",
    ]
    if r.verdict is not None:
        v = r.verdict
        if r.deltas is not None:
            d = r.deltas
            label = r.labels[v.pick]
            rows = pd.DataFrame({
                "dataset": d["dataset"], f"{label} (val)": d["value"].map(lambda x: f"{x:.2f}"),
                "CE (val)": d["ce"].map(lambda x: f"{x:.2f}"),
                "Δ [95% interval]": [ci_text(*x) for x in d[["delta", "delta_low", "delta_high"]].to_numpy()],
            })
            if r.candidates is not None:
                t = r.candidates.set_index(["setting", "benchmark"])
                for who, s in ((label, v.pick), ("CE", CE)):
                    rows[f"{who} test AUROC"] = [_pm(*t.loc[(s, ds), ["test_auroc", "test_auroc_std"]]) for ds in d["dataset"]]
                    rows[f"{who} test FPR@95"] = [_pm(*t.loc[(s, ds), ["test_fpr95", "test_fpr95_std"]]) for ds in d["dataset"]]
            parts += [f"<h2>Per dataset: {html.escape(label)} against plain CE</h2>",
                      f"<p>Validation {html.escape(o.name)} (seed means, paired difference with interval); test "
                      "metrics mean ± std over seeds, for reading, never for choosing.</p>", table(rows)]
        cand = v.table
        show = pd.DataFrame({"label": cand["setting"].map(r.labels)})
        if v.criterion == "gain":
            gain_cols = ["worst_gain", "worst_gain_low", "worst_gain_high"]
            show["worst-case gain [95%]"] = [ci_text(*x) for x in cand[gain_cols].to_numpy()]
            show["mean gain"] = cand["mean_gain"].map(lambda x: f"{x:.2f}")
            for dcol in [c for c in cand.columns if c.startswith("gain/")]:
                show[f"gain on {dcol[5:]}"] = cand[dcol].map(lambda x: f"{x:.2f}")
        regret_cols = ["worst_regret", "worst_regret_low", "worst_regret_high"]
        show["worst regret [95%]"] = [ci_text(*x) for x in cand[regret_cols].to_numpy()]
        diff_cols = ["diff_to_pick", "diff_low", "diff_high"]
        show["difference to pick [95%]"] = [ci_text(*x, digits=3) for x in cand[diff_cols].to_numpy()]
        show["tied with pick"] = ["pick" if s == v.pick else ("yes" if t else "no")
                                  for s, t in zip(cand["setting"], cand["tied"], strict=True)]
        title = "Candidates" if r.before_race is None else f"Finalists of the race ({len(v.seeds)} seeds)"
        parts += [f"<h2>{title}</h2>", table(show), img(r.plots["gains"])]
        if r.before_race is not None:
            b, criterion = r.before_race.table, r.before_race.criterion
            key = "worst_gain" if criterion == "gain" else "worst_regret"
            early = pd.DataFrame({
                "label": b["setting"].map(r.labels),
                f"{key.replace('_', ' ')} [95%]": [ci_text(*x) for x in b[[key, f"{key}_low", f"{key}_high"]].to_numpy()],
                "tied with the leader then": ["leader" if s == r.before_race.pick else "yes" if t else "no"
                                              for s, t in zip(b["setting"], b["tied"], strict=True)],
            })
            parts += [f"<h3>Every candidate at the {len(r.before_race.seeds)} seeds they share (before the race)</h3>",
                      table(early)]
        parts += ["<h3>Legend</h3>", table(r.legend)]
        if r.alpha is not None:
            parts += ["<h2>Relative α on each dataset</h2>",
                      "<p>The absolute α a relative-α candidate applied (mean over its transfer runs' evaluated epochs "
                      "of each epoch's mean α_eff): what to set as the released code's absolute α on that dataset.</p>",
                      table(r.alpha)]
    if r.joint is not None:
        parts += ["<h2>Robust-stage trials: normalized gain per dataset</h2>", img(r.plots["joint"])]
    if r.candidates is not None:
        c = r.candidates
        test = pd.DataFrame({"label": c["label"], "dataset": c["benchmark"],
                             "test AUROC": [_pm(a, b) for a, b in zip(c["test_auroc"], c["test_auroc_std"], strict=True)],
                             "test FPR@95": [_pm(a, b) for a, b in zip(c["test_fpr95"], c["test_fpr95_std"], strict=True)],
                             "test ID acc": c["test_id_accuracy"].map(lambda x: f"{x:.1f}"), "seeds": c["seeds"]})
        parts += ["<h2>Every candidate on every dataset (test, mean ± std over seeds)</h2>",
                  table(test.sort_values(["dataset", "label"]))]
    if r.comparison is not None:
        parts += comparison_html(r.comparison, o, table)
    per = r.per_dataset.rename(columns=lambda c: HEADERS.get(c, c.replace("final_test_", "final test ").replace("_std", " std")))
    parts += ["<h2>Per dataset: the validation-selected setting of its own search</h2>", table(per)]
    if r.importance:
        imp = pd.DataFrame(r.importance).fillna(0.0).reset_index().rename(columns={"index": "parameter"})
        parts += ["<h2>Parameter importance (Optuna, per study)</h2>", table(imp)]
    for key, title in (("marginal", "Marginal effects (search trials)"), ("pareto", "ID accuracy vs validation OOD AUROC")):
        if key in r.plots:
            parts += [f"<h2>{title}</h2>", img(r.plots[key])]
    return "\n".join(parts)
