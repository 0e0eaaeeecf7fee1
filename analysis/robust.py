"""The cross-setting pick: the setting with the best worst case over datasets, on validation.

Input: a tidy table with one row per (dataset, setting, seed) and the validation objective in
`value`. Datasets are made comparable by regret to each dataset's best setting (in the
objective's units, e.g. AUROC points); the robust pick minimises the largest regret, and the
best-mean pick minimises the mean regret. A bootstrap over seeds says how stable the pick is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
    """Robust and best-mean settings; ties broken by the other criterion, then by name."""
    regret = regret_table(df, mode)
    order = regret.reset_index().sort_values(["worst", "mean", "setting"])
    robust = str(order.iloc[0]["setting"])
    best_mean = str(regret.reset_index().sort_values(["mean", "worst", "setting"]).iloc[0]["setting"])
    return Pick(robust, best_mean, regret)


def bootstrap_wins(df: pd.DataFrame, mode: str, n: int = 1000, seed: int = 0) -> pd.Series:
    """How often each setting is the robust pick when each (setting, dataset) cell's seeds are
    resampled with replacement."""
    rng = np.random.default_rng(seed)
    cells = {key: g["value"].to_numpy() for key, g in df.groupby(["setting", "dataset"])}
    wins: dict[str, int] = {}
    for _ in range(n):
        rows = [
            {"setting": s, "dataset": d, "value": float(rng.choice(v, size=len(v), replace=True).mean())}
            for (s, d), v in cells.items()
        ]
        p = pick(pd.DataFrame(rows), mode).robust
        wins[p] = wins.get(p, 0) + 1
    return (pd.Series(wins, dtype=float) / n).sort_values(ascending=False)
