"""What a sweep found, read from its Parquet results alone (plus the sweep file kept beside them)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from ascood import storage
from ascood.labels import VAL_DIGITS, compact_setting, interval, metric_name, number, pm
from ascood.results import METRICS, SETTING_COLUMNS, read_results, select
from ascood.sweep.objective import objective_value
from ascood.sweep.spec import Objective


@dataclass(frozen=True)
class BestTrial:
    trial_id: str
    objective: float
    config_json: str
    params: dict


@dataclass(frozen=True)
class DatasetSummary:
    benchmark: str
    setting: str
    embedded: bool
    trials: dict[str, int]
    best: BestTrial | None
    final: dict[str, tuple[float, float]]  # metric → (mean, population std) over seeds
    final_seeds: int


def _load(results_dir: str, benchmark: str | None = None) -> pd.DataFrame:
    if not storage.list_files(results_dir, ".parquet"):
        return pd.DataFrame()
    df = read_results(results_dir)
    return df if benchmark is None else df[df["benchmark"] == benchmark]


def _scored_search_trials(df: pd.DataFrame, objective: Objective) -> list[tuple[float, str, pd.DataFrame]]:
    """Completed search trials with their validation objective, best first (test never read)."""
    scored = []
    for trial_id, rows in select(df, stage="search", completed=True, final_epoch=True).groupby("trial_id"):
        value = objective_value(rows, objective)
        if value is not None and np.isfinite(value):
            scored.append((value, str(trial_id), rows))
    scored.sort(key=lambda t: (-t[0] if objective.mode == "max" else t[0], t[1]))
    return scored


def ranked_search_trials(results_dir: str, benchmark: str, objective: Objective) -> list[pd.Series]:
    """One row (hyperparameters, config) per completed search trial, best validation objective first."""
    return [rows.iloc[0] for _, _, rows in _scored_search_trials(_load(results_dir, benchmark), objective)]


def best_from_frame(df: pd.DataFrame, objective: Objective) -> BestTrial | None:
    """The completed search trial with the best validation objective (test data never looked at)."""
    scored = _scored_search_trials(df, objective)
    if not scored:
        return None
    value, trial_id, rows = scored[0]
    first = rows.iloc[0]
    return BestTrial(trial_id, float(value), str(first["config_json"]), {k: first[k] for k in SETTING_COLUMNS})


def best_search_trial(results_dir: str, benchmark: str, objective: Objective) -> BestTrial | None:
    return best_from_frame(_load(results_dir, benchmark), objective)


def summarize(results_dir: str, objective: Objective, order: list[str] | None = None) -> list[DatasetSummary]:
    """Per dataset (in `order`, else as found): trial counts, best search trial, final test metrics."""
    return summarize_frame(_load(results_dir), objective, order)


def summarize_frame(df: pd.DataFrame, objective: Objective, order: list[str] | None = None) -> list[DatasetSummary]:
    out: list[DatasetSummary] = []
    if df.empty:
        return out
    for benchmark, bdf in df.groupby("benchmark", sort=False):
        search = select(bdf, stage="search").drop_duplicates("trial_id")
        trials = search["status"].value_counts().to_dict()
        final = select(bdf, stage="final", completed=True, final_epoch=True)
        metrics: dict[str, tuple[float, float]] = {}
        seeds = 0
        if not final.empty:
            sel = select(final, split="test", scorer=objective.scorer, ood=objective.ood)
            per_seed = sel.groupby("trial_id")[[*METRICS, "id_accuracy"]].mean()
            seeds = len(per_seed)
            metrics = {c: (float(per_seed[c].mean()), float(per_seed[c].std(ddof=0))) for c in per_seed.columns}
        first = bdf.iloc[0]
        out.append(DatasetSummary(
            str(benchmark), str(first["setting"]), bool(first["embedded"]),
            {k: int(v) for k, v in trials.items()}, best_from_frame(bdf, objective), metrics, seeds,
        ))
    if order:
        rank = {name: i for i, name in enumerate(order)}
        out.sort(key=lambda s: rank.get(s.benchmark, len(rank)))
    return out


def _trials_cell(trials: dict[str, int]) -> str:
    short = {"completed": "done", "stopped-early": "stopped", "failed": "failed", "running": "running"}
    return "\n".join(f"{v} {short.get(k, k)}" for k, v in sorted(trials.items()))


def summary_table(summaries: list[DatasetSummary], objective: Objective, name: str) -> Table:
    table = Table(title=f"sweep {name}: best per dataset, chosen on validation only")
    table.add_column("dataset", min_width=12)
    table.add_column("trials")
    for col in (metric_name(objective.name, "val"), metric_name("auroc", "test"), metric_name("fpr95", "test"),
                metric_name("id_accuracy", "test")):
        table.add_column(col, justify="right")
    embedded = False
    configs = []
    for s in summaries:
        embedded |= s.embedded

        def cell(key: str, final: dict = s.final) -> str:
            return pm(*final[key]) if key in final else "-"

        best = "-" if s.best is None else number(s.best.objective, VAL_DIGITS)
        table.add_row(f"{escape(s.benchmark)}\n{s.setting}", _trials_cell(s.trials), best,
                      cell("auroc"), cell("fpr95"), cell("id_accuracy"))
        if s.best is not None:
            configs.append(f"{escape(s.benchmark)}: {escape(compact_setting(s.best.params))}")
    scope = "all OOD sets" if objective.ood == "all" else objective.ood
    seeds = max((s.final_seeds for s in summaries), default=0)
    caption = [f"val: {objective.scorer} over {scope}; test: same, mean ± std over {seeds} final seeds"]
    caption += [f"best {c}" for c in configs]
    if embedded:
        caption.append("embedded benchmarks: a demo and test bed, not results on the paper's benchmarks")
    table.caption = "\n".join(caption)
    table.caption_justify = "left"
    return table


def summary_json(summaries: list[DatasetSummary]) -> str:
    return json.dumps([{
        "benchmark": s.benchmark, "setting": s.setting, "trials": s.trials,
        "best": None if s.best is None else {
            "trial_id": s.best.trial_id, "objective": s.best.objective,
            "params": {k: (v.item() if hasattr(v, "item") else v) for k, v in s.best.params.items()},
        },
        "final": {k: {"mean": m, "std": sd} for k, (m, sd) in s.final.items()}, "final_seeds": s.final_seeds,
    } for s in summaries], indent=2)


def load_frame(results_dir: str) -> pd.DataFrame:
    """Every result row of a sweep (empty before its first), read once for the tables here."""
    return _load(results_dir)


def comparison_table(df: pd.DataFrame, objective: Objective) -> Table | None:
    """The method comparison (`ascood.comparison`) over all OOD sets, one row per dataset and method;
    None without a comparison stage."""
    from ascood.comparison import ALL, ASCOOD_PICK, method_comparison

    if df.empty or select(df, stage="comparison").empty:
        return None
    table = method_comparison(df, objective)
    if table.empty:
        return None
    out = Table(title="ASCOOD against the baseline methods (test, all OOD sets)")
    for col in ("dataset", "method", "seeds", metric_name("auroc", "test"), f"Δ {metric_name('auroc')} [95%]",
                metric_name("fpr95", "test"), f"Δ {metric_name('fpr95')} [95%]", metric_name("id_accuracy", "test")):
        out.add_column(col, justify="left" if col in ("dataset", "method") else "right")
    rows = table[table["group"] == ALL]
    for i, (_, r) in enumerate(rows.iterrows()):
        last = i == len(rows) - 1 or rows.iloc[i + 1]["benchmark"] != r["benchmark"]
        out.add_row(
            escape(str(r["benchmark"])), escape(str(r["method"])), str(r["seeds"]),
            pm(r["auroc"], r["auroc_std"]), interval(r["delta_auroc"], r["delta_auroc_low"], r["delta_auroc_high"]),
            pm(r["fpr95"], r["fpr95_std"]), interval(r["delta_fpr95"], r["delta_fpr95_low"], r["delta_fpr95_high"]),
            pm(r["id_accuracy"], r["id_accuracy_std"]), end_section=last,
        )
    embedded = bool(df["embedded"].any())
    out.caption = "\n".join([
        f"scorer {objective.scorer}; mean ± std (population) over seeds; Δ = method − {ASCOOD_PICK} (the final stage: "
        "the search's best setting), paired by seed, 95% t interval; per OOD group: ascood-sweep report",
        *(["embedded benchmarks: a demo and test bed, not results on the paper's benchmarks"] if embedded else []),
    ])
    out.caption_justify = "left"
    return out
