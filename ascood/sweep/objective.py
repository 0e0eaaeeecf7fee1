"""The sweep objective, computed from result rows (validation split only, by construction)."""

from __future__ import annotations

import pandas as pd

from ascood.results import select
from ascood.sweep.spec import Objective


def objective_rows(df: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """Validation rows of the objective's scorer and OOD selection ('all', a group, or a set)."""
    return select(df, split="val", scorer=objective.scorer, ood=objective.ood)


def objective_value(df: pd.DataFrame, objective: Objective) -> float | None:
    """The objective of one (run, epoch): mean of the metric over the selected validation sets."""
    rows = objective_rows(df, objective)
    if rows.empty:
        return None
    return float(rows[objective.name].mean())


def objective_error(rows: list[dict], objective: Objective) -> str | None:
    """Why the objective's scorer has no value in these rows (it failed), else None."""
    errors = objective_rows(pd.DataFrame(rows), objective)["scorer_error"].dropna()
    return None if errors.empty else str(errors.iloc[0])


def epoch_metrics(rows: list[dict], objective: Objective) -> dict:
    """What a trial reports to Tune after an evaluated epoch."""
    df = pd.DataFrame(rows)
    val = select(df, split="val")
    wall = df["wall_time_s"].max() if "wall_time_s" in df else None
    return {
        "objective": objective_value(df, objective),
        "val_id_accuracy": float(val["id_accuracy"].iloc[0]),
        "epoch": int(df["epoch"].iloc[0]),
        "epochs": int(df["epochs"].iloc[0]),
        "status": "running",
        **({"wall_time_s": float(wall)} if wall is not None and wall == wall else {}),
    }


def ood_selection_names(sets: list[tuple[str, str]]) -> set[str]:
    """Names an objective's `ood` may use for a benchmark with these (set, group) pairs."""
    return {"all"} | {s for s, _ in sets} | {g for _, g in sets}
