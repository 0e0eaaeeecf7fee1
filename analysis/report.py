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
from analysis.robust import Pick, bootstrap_wins, pick
from ascood.results import METRICS, SETTING_COLUMNS, select
from ascood.sweep.objective import objective_rows
from ascood.sweep.spec import Objective, SweepFileError, load_sweep
from ascood.sweep.summary import summarize_frame

PLOTTED = ("alpha_max", "p_inv", "lam", "sigma")


@dataclass
class Report:
    objective: Objective
    datasets: list[str]
    per_dataset: pd.DataFrame
    pick: Pick | None = None
    wins: pd.Series | None = None
    chosen: pd.DataFrame | None = None
    candidates: pd.DataFrame | None = None  # every transfer setting's test metrics per dataset
    incomplete: list[str] = field(default_factory=list)  # settings left out: not measured on every dataset
    importance: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)


def _objective(outputs: list[Path]) -> Objective:
    objectives = []
    for out in outputs:
        try:
            spec, _ = load_sweep(Path(out) / "sweep.yaml")
        except SweepFileError as exc:
            raise AnalysisInputError(str(exc)) from None
        objectives.append(spec.objective)
    if any(o != objectives[0] for o in objectives):
        raise AnalysisInputError("the sweeps optimise different objectives; report them separately")
    return objectives[0]


def _metric_by(rows: pd.DataFrame, objective: Objective, split: str, keys: list[str]) -> pd.DataFrame:
    """Per group of `keys`: objective scorer's metrics averaged over the selected OOD sets."""
    sel = select(rows, split=split, scorer=objective.scorer, ood=objective.ood)
    return sel.groupby(keys)[[*METRICS, "id_accuracy"]].mean().reset_index()


def transfer_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Completed transfer runs at their last epoch, labelled with their setting."""
    rows = select(df, stage="transfer", completed=True, final_epoch=True).copy()
    rows["setting"] = [setting_id(r) if r["method"] == "ascood" else "plain CE baseline" for _, r in rows.iterrows()]
    return rows


def transfer_table(rows: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """(dataset, setting, seed, value): the validation objective of every transfer run."""
    if rows.empty:
        return pd.DataFrame(columns=["dataset", "setting", "seed", "value"])
    val = objective_rows(rows, objective)
    table = val.groupby(["benchmark", "setting", "seed"])[objective.name].mean().reset_index()
    return table.rename(columns={"benchmark": "dataset", objective.name: "value"})


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


def regret_plot(p: Pick, path: Path) -> Path:
    datasets = [c for c in p.regret.columns if c not in ("worst", "mean")]
    order = p.regret.sort_values("worst").index[:12]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(order) + 1.5))
    y = np.arange(len(order))
    for i, d in enumerate(datasets):
        ax.barh(y + i * 0.8 / len(datasets), p.regret.loc[order, d], height=0.8 / len(datasets), label=d)
    ax.set_yticks(y + 0.4 - 0.4 / len(datasets))
    ax.set_yticklabels([s if len(s) < 60 else s[:57] + "…" for s in order], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("validation regret to each dataset's best setting")
    ax.legend(fontsize=7)
    return _save(fig, path)


def build_report(outputs: list[Path], out_dir: Path, *, bootstrap: int = 500) -> Report:
    outputs = [Path(o) for o in outputs]
    df = load_sweeps(outputs)
    objective = _objective(outputs)
    datasets = list(dict.fromkeys(df["benchmark"]))
    report = Report(objective, datasets, per_dataset_table(df, objective))
    out_dir.mkdir(parents=True, exist_ok=True)
    transfer = transfer_rows(df)
    table = transfer_table(transfer, objective)
    measured = table.groupby("setting")["dataset"].nunique()
    report.incomplete = sorted(measured.index[measured < table["dataset"].nunique()])
    table = table[~table["setting"].isin(report.incomplete)]  # a failed transfer run leaves a gap
    if not table.empty:
        report.pick = pick(table, objective.mode)
        report.wins = bootstrap_wins(table, objective.mode, n=bootstrap)
        tests = _test_of_settings(transfer, objective)
        report.candidates = tests
        chosen = tests[tests["setting"] == report.pick.robust].set_index("benchmark")
        chosen["regret"] = report.pick.regret.loc[report.pick.robust, chosen.index]
        report.chosen = chosen.reset_index()
        report.plots["regret"] = regret_plot(report.pick, out_dir / "regret.png")
        picks = report.pick.regret.reset_index().rename(columns={"index": "setting"})
        picks["robust_pick"] = picks["setting"] == report.pick.robust
        picks["best_mean_pick"] = picks["setting"] == report.pick.best_mean
        picks["bootstrap_wins"] = picks["setting"].map(report.wins).fillna(0.0)
        picks.to_csv(out_dir / "picks.csv", index=False)
        picks.to_parquet(out_dir / "picks.parquet")
    report.importance = importance(outputs, datasets)
    if not select(df, stage="search", completed=True).empty:
        report.plots["marginal"] = marginal_plot(df, objective, out_dir / "marginal.png")
        report.plots["pareto"] = pareto_plot(df, objective, out_dir / "pareto.png")
    (out_dir / "summary.json").write_text(summary_json(report))
    (out_dir / "report.html").write_text(render_html(report))
    return report


def summary_json(r: Report) -> str:
    data = {
        "objective": r.objective.model_dump(),
        "datasets": r.datasets,
        "per_dataset": json.loads(r.per_dataset.to_json(orient="records")),
        "robust_pick": None if r.pick is None else r.pick.robust,
        "best_mean_pick": None if r.pick is None else r.pick.best_mean,
        "chosen": None if r.chosen is None else json.loads(r.chosen.to_json(orient="records")),
        "bootstrap_wins": None if r.wins is None else r.wins.to_dict(),
        "left_out_incomplete_settings": r.incomplete,
        "importance": r.importance,
    }
    return json.dumps(data, indent=2)


def render_html(r: Report) -> str:
    def table(df: pd.DataFrame) -> str:
        return df.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0)

    def img(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'

    parts = [
        "<!doctype html><meta charset='utf-8'><title>ASCOOD cross-setting report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{padding:3px 8px;border-bottom:1px solid #ddd}img{max-width:100%}</style>",
        "<h1>Which ASCOOD settings hold up across datasets</h1>",
        f"<p>Objective (validation only): <b>{html.escape(r.objective.metric)}</b> of "
        f"<b>{html.escape(r.objective.scorer)}</b> over {html.escape(r.objective.ood)} OOD sets.</p>",
        "<h2>Per dataset: the validation-selected setting</h2>", table(r.per_dataset),
    ]
    if r.pick is not None:
        parts += [
            "<h2>Cross-setting pick</h2>",
            f"<p>Robust pick (smallest worst-case regret): <b>{html.escape(r.pick.robust)}</b><br>"
            f"Best mean: <b>{html.escape(r.pick.best_mean)}</b></p>",
            "<h3>The robust pick on each dataset (test metrics: mean ± std over seeds)</h3>", table(r.chosen),
            "<h3>Bootstrap over seeds: how often each setting is the robust pick</h3>",
            table(r.wins.rename("wins").reset_index().rename(columns={"index": "setting"})),
            img(r.plots["regret"]),
            "<h3>Every candidate on every dataset, beside the plain-CE baseline and the default setting "
            "(test, mean ± std over seeds; for reading, never for choosing)</h3>",
            table(r.candidates),
        ]
    else:
        parts.append("<p>No transfer stage in these results: add <code>transfer:</code> to the sweep file "
                     "to measure every candidate on every dataset.</p>")
    if r.importance:
        imp = pd.DataFrame(r.importance).fillna(0.0).reset_index().rename(columns={"index": "parameter"})
        parts += ["<h2>Parameter importance (Optuna, per dataset)</h2>", table(imp)]
    for key, title in (("marginal", "Marginal effects (search trials)"), ("pareto", "ID accuracy vs validation OOD AUROC")):
        if key in r.plots:
            parts += [f"<h2>{title}</h2>", img(r.plots[key])]
    return "\n".join(parts)
