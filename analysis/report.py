"""`ascood-sweep report OUT…`: what holds up across spurious, fine-grained and conventional data.

Reads the Parquet results (and each output's sweep.yaml for the objective, optuna.db for the
studies) and writes: report.html (one self-contained page from templates/report.html.j2, PNG plots
inlined), the PNGs, picks.csv / picks.parquet, summary.json. Only validation metrics choose; test
metrics are reported. Names and number formats come from `ascood.labels`, shared with the Rich summary.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from analysis.load import AnalysisInputError, load_sweeps, setting_id
from ascood.comparison import ASCOOD_PICK, method_comparison
from ascood.config import validate_config
from ascood.gain import DEFAULT_FLOOR
from ascood.labels import (
    GAIN_DIGITS,
    MINUS,
    VAL_DIGITS,
    compact_setting,
    interval,
    metric_name,
    number,
    param_name,
    pm,
    setting_fields,
    short_labels,
)
from ascood.results import METRICS, SETTING_COLUMNS, select
from ascood.sweep.spec import Objective, SweepFileError, SweepSpec, load_sweep, normalize_trial_keys
from ascood.sweep.summary import DatasetSummary, best_from_frame, summarize_frame
from ascood.verdict import CE, Verdict, delta_to_ce, raced_verdict, transfer_rows, transfer_table

PLOTTED = ("alpha_max", "p_inv", "lam", "sigma")
TEMPLATES = Path(__file__).resolve().parent / "templates"
DPI = 110
FIG_WIDTH = 9.0  # inches: about 1000 px at DPI, shown at most the page's width


@dataclass
class Report:
    objective: Objective
    datasets: list[str]
    per_dataset: pd.DataFrame
    floor: float = DEFAULT_FLOOR
    verdict: Verdict | None = None
    before_race: Verdict | None = None  # every candidate at the seeds all share, when a race added seeds
    labels: dict[str, str] = field(default_factory=dict)  # candidate setting → short label (S1, S2, …, CE)
    setting_labels: dict[str, str] = field(default_factory=dict)  # the candidates', then each dataset's best
    legend: pd.DataFrame | None = None  # label, where the setting came from, its setting
    deltas: pd.DataFrame | None = None  # per dataset: the pick against CE on validation
    candidates: pd.DataFrame | None = None  # every transfer setting's test metrics per dataset
    alpha: pd.DataFrame | None = None  # each relative-α candidate's α as each dataset's mean effective α
    joint: pd.DataFrame | None = None  # per robust-stage trial: its normalized gain on each dataset
    incomplete: list[str] = field(default_factory=list)  # settings left out: not measured on every dataset
    importance: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    comparison: pd.DataFrame | None = None  # ASCOOD's pick against the baseline methods (ascood.comparison)
    summaries: list[DatasetSummary] = field(default_factory=list)  # per sweep and dataset (ascood.sweep.summary)

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
    spec = {}
    for m in (*METRICS, "id_accuracy"):
        spec[f"test_{m}"] = (m, "mean")
        spec[f"test_{m}_std"] = (m, lambda x: float(np.std(x)))
    agg = per_seed.groupby(["benchmark", "setting"]).agg(**spec, seeds=("seed", "nunique"))
    return agg.reset_index()


def dataset_summaries(df: pd.DataFrame, objective: Objective) -> list[DatasetSummary]:
    """Every sweep's per-dataset summary, sweep by sweep (a dataset may appear in several)."""
    return [s for _, sweep_df in df.groupby("sweep_dir", sort=False) for s in summarize_frame(sweep_df, objective)]


def per_dataset_table(df: pd.DataFrame, objective: Objective,
                      summaries: list[DatasetSummary] | None = None) -> pd.DataFrame:
    rows = []
    for s in dataset_summaries(df, objective) if summaries is None else summaries:
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
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _mark(ax, x: float, y: float, label: str) -> None:
    ax.annotate(label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8, fontweight="bold")


def marginal_plot(df: pd.DataFrame, objective: Objective, path: Path,
                  marks: dict[tuple[str, str], str] | None = None) -> Path:
    """Validation objective of every completed search trial against each searched parameter; each
    dataset's best trial carries its setting's short label (`marks`: (dataset, trial id) → label)."""
    marks = marks or {}
    search = select(df, stage="search", completed=True, final_epoch=True)
    val = _metric_by(search, objective, "val", ["benchmark", "trial_id", *SETTING_COLUMNS])
    fig, axes = plt.subplots(2, 2, figsize=(FIG_WIDTH, 6.6), squeeze=False)
    for ax, param in zip(axes.flat, PLOTTED, strict=True):
        for dataset, g in val.groupby("benchmark", sort=False):
            ax.scatter(g[param], g[objective.name], label=dataset, s=18, alpha=0.8)
            for _, row in g.iterrows():
                if (dataset, row["trial_id"]) in marks:
                    _mark(ax, row[param], row[objective.name], marks[(dataset, row["trial_id"])])
        if param == "alpha_max":
            ax.set_xscale("log")
        ax.set_xlabel(param_name(param))
        ax.set_ylabel(f"val {metric_name(objective.name)} ({objective.scorer})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def pareto_plot(df: pd.DataFrame, objective: Objective, path: Path,
                marks: dict[tuple[str, str], str] | None = None) -> Path:
    """ID accuracy against validation OOD AUROC per search trial, with each dataset's Pareto front
    and its best trial's short label."""
    marks = marks or {}
    search = select(df, stage="search", completed=True, final_epoch=True)
    val = _metric_by(search, objective, "val", ["benchmark", "trial_id"])
    fig, ax = plt.subplots(figsize=(FIG_WIDTH * 0.7, 4.6))
    for dataset, g in val.groupby("benchmark", sort=False):
        pts = g[["auroc", "id_accuracy"]].to_numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=18, alpha=0.7, label=dataset)
        dominated = [((pts >= p).all(axis=1) & (pts > p).any(axis=1)).any() for p in pts]
        front = pts[[not d for d in dominated]]
        front = front[np.argsort(front[:, 0])]
        ax.plot(front[:, 0], front[:, 1], "-", lw=1)
        for (x, y), trial in zip(pts, g["trial_id"], strict=True):
            if (dataset, trial) in marks:
                _mark(ax, x, y, marks[(dataset, trial)])
    ax.set_xlabel(f"val OOD {metric_name('auroc')} ({objective.scorer})")
    ax.set_ylabel(f"val {metric_name('id_accuracy')} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def gains_plot(r: Report, path: Path) -> Path:
    """Each candidate's worst-case score with its interval, labelled S1, S2, …"""
    v = r.verdict
    t = v.table
    key, low, high = (("worst_gain", "worst_gain_low", "worst_gain_high") if v.criterion == "gain"
                      else ("worst_regret", "worst_regret_low", "worst_regret_high"))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH * 0.75, 0.45 * len(t) + 1.6))
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


def joint_plot(joint: pd.DataFrame, datasets: list[str], highlight: set[str], path: Path,
               labels: dict[str, str] | None = None) -> Path:
    """Parallel coordinates: one line per robust-stage trial, its normalized gain on each dataset;
    a highlighted line that became a candidate ends in its short label."""
    labels = labels or {}
    fig, ax = plt.subplots(figsize=(min(FIG_WIDTH, 1.8 * len(datasets) + 3.0), 4.0))
    x = np.arange(len(datasets))
    for _, row in joint.iterrows():
        top = row["setting"] in highlight
        y = np.array([row[d] for d in datasets], dtype=float)
        ax.plot(x, y, "-o", ms=3, lw=2.2 if top else 0.8, alpha=1 if top else 0.45,
                color="#d62728" if top else "#1f77b4", zorder=3 if top else 2)
        reached = np.flatnonzero(np.isfinite(y))
        if top and row["setting"] in labels and len(reached):
            _mark(ax, x[reached[-1]], y[reached[-1]], labels[row["setting"]])
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
    summaries = dataset_summaries(df, objective)
    report = Report(objective, datasets, per_dataset_table(df, objective, summaries), floor=floor, summaries=summaries)
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
        report.labels = short_labels(first.table["setting"], fixed={CE: "CE"})
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
    bests = [setting_id(s.best.params) for s in summaries if s.best is not None]
    report.setting_labels = short_labels([*report.labels, *bests], fixed={CE: "CE"})
    if report.setting_labels:
        where = origins(df, specs, objective, joint)
        report.legend = pd.DataFrame([
            {"label": label, "candidate of": ", ".join(where.get(s, ["—"])), "setting": s}
            for s, label in report.setting_labels.items()
        ])
    if report.joint is not None:
        done = report.joint[report.joint["complete"]]
        top = set(done["setting"][: max((s.robust.top_k for s in specs if s.robust), default=1)])
        report.plots["joint"] = joint_plot(report.joint, [d for d in datasets if d in report.joint.columns], top,
                                           out_dir / "joint.png", report.setting_labels)
    report.importance = importance(outputs, datasets)
    if not select(df, stage="comparison").empty:
        report.comparison = method_comparison(df, objective)
        report.comparison.to_csv(out_dir / "comparison.csv", index=False)
    if not select(df, stage="search", completed=True).empty:
        marks = {(s.benchmark, s.best.trial_id): report.setting_labels[setting_id(s.best.params)]
                 for s in summaries if s.best is not None}
        report.plots["marginal"] = marginal_plot(df, objective, out_dir / "marginal.png", marks)
        report.plots["pareto"] = pareto_plot(df, objective, out_dir / "pareto.png", marks)
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


@dataclass(frozen=True)
class HtmlTable:
    """A table as the template draws it: headers and cells as text, the first `text_columns`
    columns left-aligned (names), the rest right-aligned (numbers); `marked` rows in bold."""
    headers: list[str]
    rows: list[list[str]]
    text_columns: int = 1
    marked: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    src: str  # a data: URI
    alt: str
    width: int
    height: int


def _html_table(frame: pd.DataFrame, text_columns: int = 1, marked: list[bool] | None = None) -> HtmlTable:
    return HtmlTable([str(c) for c in frame.columns], [[str(v) for v in row] for row in frame.itertuples(index=False)],
                     text_columns, list(marked or []))


def _figure(path: Path, alt: str) -> Figure:
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])  # the PNG's IHDR
    return Figure(f"data:image/png;base64,{base64.b64encode(data).decode()}", alt, width, height)


def _value(v: object) -> str:
    """A parameter value as the legend shows it (full precision of the setting's name)."""
    if isinstance(v, float):
        return f"{v:.6g}".replace("-", MINUS) if v < 0 else f"{v:.6g}"
    return str(v)


def _trials_text(trials: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(trials.items())) or "none"


def legend_table(r: Report) -> HtmlTable | None:
    """label → where the setting came from and its every parameter."""
    if r.legend is None:
        return None
    rows = []
    for _, row in r.legend.iterrows():
        fields = setting_fields(row["setting"])
        rec = {"label": row["label"], "candidate of": row["candidate of"]}
        rec.update({param_name(k): fields.get(k, "—") for k in SETTING_COLUMNS})
        rows.append(rec)
    frame = pd.DataFrame(rows)
    return _html_table(frame, text_columns=2, marked=[lab == r.labels.get(r.pick) for lab in frame["label"]])


def _final_metrics(rec: pd.Series) -> pd.DataFrame:
    cells = {}
    for m in (*METRICS, "id_accuracy"):
        key = f"final_test_{m}"
        cells[metric_name(m, "test")] = pm(rec[key], rec[f"{key}_std"]) if key in rec and pd.notna(rec[key]) else "—"
    return pd.DataFrame([cells])


def _comparison(c: pd.DataFrame) -> HtmlTable:
    show = pd.DataFrame({
        "OOD group": c["group"], "method": c["method"], "seeds": c["seeds"],
        metric_name("auroc", "test"): [pm(a, b) for a, b in zip(c["auroc"], c["auroc_std"], strict=True)],
        f"Δ {metric_name('auroc')} [95%]": [interval(*x) for x in
                                            c[["delta_auroc", "delta_auroc_low", "delta_auroc_high"]].to_numpy()],
        metric_name("fpr95", "test"): [pm(a, b) for a, b in zip(c["fpr95"], c["fpr95_std"], strict=True)],
        f"Δ {metric_name('fpr95')} [95%]": [interval(*x) for x in
                                            c[["delta_fpr95", "delta_fpr95_low", "delta_fpr95_high"]].to_numpy()],
        metric_name("id_accuracy", "test"): [pm(a, b) for a, b in zip(c["id_accuracy"], c["id_accuracy_std"],
                                                                      strict=True)],
    })
    return _html_table(show, text_columns=2, marked=list(c["method"] == ASCOOD_PICK))


def dataset_sections(r: Report) -> list[dict]:
    """One section per dataset: its own search's best setting, the final seeds' test metrics, and
    ASCOOD against the baseline methods there."""
    o = r.objective
    out = []
    for i, name in enumerate(r.datasets):
        runs = []
        summaries = [s for s in r.summaries if s.benchmark == name]
        for s, (_, rec) in zip(summaries, r.per_dataset[r.per_dataset["dataset"] == name].iterrows(), strict=True):
            best = None
            if s.best is not None:
                sid = setting_id(s.best.params)
                cells = {"label": r.setting_labels.get(sid, "—"), "trials": _trials_text(s.trials),
                         f"best val {metric_name(o.name)}": number(s.best.objective, VAL_DIGITS)}
                cells.update({param_name(k): _value(rec[k]) for k in SETTING_COLUMNS if k in rec})
                best = {"label": cells["label"], "compact": compact_setting(s.best.params),
                        "table": _html_table(pd.DataFrame([cells]), text_columns=2)}
            runs.append({"trials": _trials_text(s.trials), "best": best, "seeds": s.final_seeds,
                         "final": _html_table(_final_metrics(rec), text_columns=0) if s.final else None})
        comparison = None
        if r.comparison is not None and not r.comparison.empty:
            mine = r.comparison[r.comparison["benchmark"] == name]
            comparison = _comparison(mine) if not mine.empty else None
        category = summaries[0].setting if summaries else ""
        embedded = any(s.embedded for s in summaries)
        out.append({"id": f"dataset-{i + 1}", "name": name, "category": category, "embedded": embedded,
                    "runs": runs, "comparison": comparison})
    return out


def _pick_vs_ce(r: Report) -> HtmlTable | None:
    if r.verdict is None or r.deltas is None or r.verdict.pick == CE:
        return None  # (CE against itself says nothing)
    d, label = r.deltas, r.labels[r.verdict.pick]
    rows = pd.DataFrame({
        "dataset": d["dataset"], f"{label} (val)": d["value"].map(lambda x: number(x, VAL_DIGITS)),
        "CE (val)": d["ce"].map(lambda x: number(x, VAL_DIGITS)),
        "Δ [95% interval]": [interval(*x, digits=VAL_DIGITS) for x in d[["delta", "delta_low", "delta_high"]].to_numpy()],
    })
    if r.candidates is not None:
        t = r.candidates.set_index(["setting", "benchmark"])
        for who, s in ((label, r.verdict.pick), ("CE", CE)):
            for m in ("auroc", "fpr95"):
                rows[f"{who} {metric_name(m, 'test')}"] = [pm(*t.loc[(s, ds), [f"test_{m}", f"test_{m}_std"]])
                                                           for ds in d["dataset"]]
    return _html_table(rows)


def _candidates(r: Report) -> HtmlTable:
    v = r.verdict
    cand = v.table
    show = pd.DataFrame({"label": cand["setting"].map(r.labels)})
    if v.criterion == "gain":
        show["worst-case gain [95%]"] = [interval(*x, digits=GAIN_DIGITS, sign=False)
                                         for x in cand[["worst_gain", "worst_gain_low", "worst_gain_high"]].to_numpy()]
        show["mean gain"] = cand["mean_gain"].map(lambda x: number(x, GAIN_DIGITS))
        for dcol in [c for c in cand.columns if c.startswith("gain/")]:
            show[f"gain on {dcol[5:]}"] = cand[dcol].map(lambda x: number(x, GAIN_DIGITS))
    show["worst regret [95%]"] = [interval(*x, digits=VAL_DIGITS, sign=False)
                                  for x in cand[["worst_regret", "worst_regret_low", "worst_regret_high"]].to_numpy()]
    show["difference to pick [95%]"] = [interval(*x, digits=3)
                                        for x in cand[["diff_to_pick", "diff_low", "diff_high"]].to_numpy()]
    show["tied with pick"] = ["pick" if s == v.pick else ("yes" if t else "no")
                              for s, t in zip(cand["setting"], cand["tied"], strict=True)]
    return _html_table(show, marked=list(cand["setting"] == v.pick))


def _before_race(r: Report) -> HtmlTable | None:
    if r.before_race is None:
        return None
    b = r.before_race.table
    key = "worst_gain" if r.before_race.criterion == "gain" else "worst_regret"
    early = pd.DataFrame({
        "label": b["setting"].map(r.labels),
        f"{key.replace('_', ' ')} [95%]": [interval(*x, digits=GAIN_DIGITS, sign=False)
                                           for x in b[[key, f"{key}_low", f"{key}_high"]].to_numpy()],
        "tied with the leader then": ["leader" if s == r.before_race.pick else "yes" if t else "no"
                                      for s, t in zip(b["setting"], b["tied"], strict=True)],
    })
    return _html_table(early)


def _every_candidate(r: Report) -> HtmlTable | None:
    if r.candidates is None:
        return None
    c = r.candidates.sort_values(["benchmark", "label"])
    show = pd.DataFrame({"label": c["label"], "dataset": c["benchmark"]})
    for m in (*METRICS, "id_accuracy"):
        show[metric_name(m, "test")] = [pm(a, b) for a, b in zip(c[f"test_{m}"], c[f"test_{m}_std"], strict=True)]
    show["seeds"] = c["seeds"].to_numpy()
    return _html_table(show, text_columns=2)


def _alpha(r: Report) -> HtmlTable | None:
    if r.alpha is None:
        return None
    a = r.alpha.copy()
    for col in ("relative α", "mean effective α", "min (epoch)", "max (epoch)"):
        a[col] = a[col].map(lambda x: f"{x:.4g}")
    return _html_table(a, text_columns=2)


def _importance(r: Report) -> HtmlTable | None:
    if not r.importance:
        return None
    imp = pd.DataFrame(r.importance).fillna(0.0)
    imp = imp.map(lambda x: number(x, GAIN_DIGITS)).reset_index().rename(columns={"index": "parameter"})
    imp["parameter"] = imp["parameter"].map(param_name)
    return _html_table(imp)


def page_context(r: Report) -> dict:
    """Everything the template shows, as text, tables and inlined figures."""
    o = r.objective
    v = r.verdict
    alts = {
        "gains": "each candidate's worst-case score with its 95% interval, by short label",
        "joint": "normalized gain of every robust-stage trial on each dataset",
        "marginal": "validation objective of every search trial against α, p_inv, λ and σ",
        "pareto": "validation ID accuracy against validation OOD AUROC per search trial",
    }
    figures = {k: _figure(r.plots[k], alt) if k in r.plots else None for k, alt in alts.items()}
    return {
        "objective": {"metric": metric_name(o.name), "scorer": o.scorer,
                      "scope": "all" if o.ood == "all" else o.ood, "higher": o.mode == "max"},
        "floor": f"{r.floor:g}",
        "datasets": r.datasets,
        "embedded": any(s.embedded for s in r.summaries),
        "verdict": verdict_sentences(r),
        "incomplete": r.incomplete,
        "legend": legend_table(r),
        "sections": dataset_sections(r),
        "has_comparison": r.comparison is not None and not r.comparison.empty,
        "ascood_pick": ASCOOD_PICK,
        "pick_label": None if v is None else r.labels[v.pick],
        "pick_vs_ce": _pick_vs_ce(r),
        "candidates": None if v is None else _candidates(r),
        "race_seeds": None if r.before_race is None else len(v.seeds),
        "before_race": _before_race(r),
        "before_race_seeds": None if r.before_race is None else len(r.before_race.seeds),
        "alpha": _alpha(r),
        "every_candidate": _every_candidate(r),
        "importance": _importance(r),
        "figures": figures,
    }


def render_html(r: Report) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(page_context(r))
