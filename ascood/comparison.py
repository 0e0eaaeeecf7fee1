"""ASCOOD against the baseline training methods: per dataset and OOD group, test metrics over seeds
and each baseline's paired difference to the ASCOOD pick, with an interval.

The ASCOOD pick of a dataset is its final stage: the search's best setting on validation,
trained with the final seeds. Baselines (the `comparison` stage) train with the same seeds, so
seed s of a baseline and of the pick share the data order and initialisation and are compared as
a pair. Every method is scored by the sweep objective's scorer. Intervals are Student-t intervals
of the mean paired difference (`scipy.stats.ttest_rel`): with three seeds the percentile bootstrap
has ten distinct resamples and is far too narrow.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import stats

from ascood.results import select
from ascood.sweep.spec import Objective

ASCOOD_PICK = "ASCOOD (pick)"
CONFIDENCE = 0.95
COMPARED = ("auroc", "fpr95")
ALL = "all"


def method_label(method: str, options_json: str | None) -> str:
    """A baseline's name, with the options it sets away from the paper's defaults."""
    from ascood.method.registry import METHODS

    defaults = METHODS[method].options if method in METHODS else {}
    options = json.loads(options_json or "{}")
    changed = {k: v for k, v in options.items() if k in defaults and defaults[k] != v}
    if not changed:
        return method
    return f"{method} (" + ", ".join(f"{k.removeprefix(method + '_')}={v:g}" if isinstance(v, float)
                                     else f"{k.removeprefix(method + '_')}={v}" for k, v in sorted(changed.items())) + ")"


def per_seed(df: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """(benchmark, group, method, seed) → test metrics and ID accuracy: the final ASCOOD runs and the
    comparison stage's, at their last epoch, the objective's scorer; a group's value is the plain mean
    of its OOD sets (OpenOOD's), `all` the mean over every set."""
    parts = []
    for stage in ("final", "comparison"):
        rows = select(df, stage=stage, split="test", scorer=objective.scorer, completed=True, final_epoch=True)
        if rows.empty:
            continue
        labels = (ASCOOD_PICK if stage == "final" else
                  [method_label(m, o) for m, o in zip(rows["method"], rows["method_options"], strict=True)])
        rows = rows.assign(method_label=labels)
        keys = ["benchmark", "method_label", "seed"]
        by_group = rows.groupby([*keys, "ood_group"], as_index=False)[[*COMPARED, "id_accuracy"]].mean()
        overall = rows.groupby(keys, as_index=False)[[*COMPARED, "id_accuracy"]].mean().assign(ood_group=ALL)
        parts += [overall, by_group]
    if not parts:
        return pd.DataFrame(columns=["benchmark", "method_label", "seed", "ood_group", *COMPARED, "id_accuracy"])
    out = pd.concat(parts, ignore_index=True).rename(columns={"ood_group": "group", "method_label": "method"})
    return out.drop_duplicates(["benchmark", "method", "seed", "group"])


def paired_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of a − b over paired seeds, with its t interval (NaN bounds below two pairs, and the
    point itself when every difference is the same)."""
    d = a - b
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), float("nan"), float("nan")
    if np.allclose(d, d[0]):
        return float(d[0]), float(d[0]), float(d[0])
    ci = stats.ttest_rel(a, b).confidence_interval(CONFIDENCE)
    return float(d.mean()), float(ci.low), float(ci.high)


def method_comparison(df: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """One row per (dataset, group, method): seeds, mean ± population std of each compared metric
    and ID accuracy, and for baselines Δ = baseline − pick over the seeds both have, with its interval
    (in metric points; for FPR@95 a negative Δ favours the baseline)."""
    seeds = per_seed(df, objective)
    rows = []
    for (benchmark, group), g in seeds.groupby(["benchmark", "group"], sort=False):
        pick = g[g["method"] == ASCOOD_PICK].set_index("seed")
        order = [ASCOOD_PICK, *sorted(m for m in g["method"].unique() if m != ASCOOD_PICK)]
        for method in (m for m in order if m in set(g["method"])):
            mine = g[g["method"] == method].set_index("seed")
            row = {"benchmark": benchmark, "group": group, "method": method, "seeds": len(mine)}
            for metric in (*COMPARED, "id_accuracy"):
                row[metric], row[f"{metric}_std"] = float(mine[metric].mean()), float(mine[metric].std(ddof=0))
            common = sorted(set(mine.index) & set(pick.index))
            row["paired_seeds"] = len(common) if method != ASCOOD_PICK else len(mine)
            for metric in COMPARED:
                if method == ASCOOD_PICK or not common:
                    row[f"delta_{metric}"] = row[f"delta_{metric}_low"] = row[f"delta_{metric}_high"] = np.nan
                    continue
                point, low, high = paired_interval(mine.loc[common, metric].to_numpy(), pick.loc[common, metric].to_numpy())
                row[f"delta_{metric}"], row[f"delta_{metric}_low"], row[f"delta_{metric}_high"] = point, low, high
            rows.append(row)
    return pd.DataFrame(rows)


def delta_text(point: float, low: float, high: float) -> str:
    if not np.isfinite(point):
        return "–"
    if not np.isfinite(low):
        return f"{point:+.1f} (one seed)"
    return f"{point:+.1f} [{low:+.1f}, {high:+.1f}]"
