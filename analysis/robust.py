"""The regret pick: the setting with the smallest worst-case regret to each dataset's best, on
validation (used where no CE baseline is measured; `ascood.verdict` holds the gain-based verdict)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Pick:
    robust: str  # smallest worst-case regret
    best_mean: str  # smallest mean regret
    regret: pd.DataFrame  # setting × dataset regret, plus "worst" and "mean" columns


def regret_table(df: pd.DataFrame, mode: str) -> pd.DataFrame:
    """setting × dataset regret of the seed-mean objective to the dataset's best setting."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode: expected max or min, got {mode!r}")
    means = df.groupby(["setting", "dataset"])["value"].mean().unstack("dataset")
    if means.isna().any().any():
        missing = means.columns[means.isna().any()].tolist()
        raise ValueError(f"every setting must be measured on every dataset; missing on {missing}")
    best = means.max() if mode == "max" else means.min()
    regret = (best - means) if mode == "max" else (means - best)
    regret["worst"] = regret.max(axis=1)
    regret["mean"] = regret[[c for c in regret.columns if c not in ("worst",)]].mean(axis=1)
    return regret


def pick(df: pd.DataFrame, mode: str) -> Pick:
    """Smallest worst-case and smallest mean regret; ties broken by the other criterion, then by name."""
    regret = regret_table(df, mode)
    order = regret.reset_index().sort_values(["worst", "mean", "setting"])
    robust = str(order.iloc[0]["setting"])
    best_mean = str(regret.reset_index().sort_values(["mean", "worst", "setting"]).iloc[0]["setting"])
    return Pick(robust, best_mean, regret)
