"""The cross-setting verdict and how sure it is: worst-case normalized gain over CE, with intervals.

Input: a tidy table with one row per (dataset, setting, seed) and the validation objective in
`value`. Candidates are paired by seed: seed s of every candidate, and of CE, shares the seed
(data order, initialisation), so only seeds measured for every candidate on every dataset are
used. Per (candidate, dataset, seed) the normalized gain over CE at the same seed
(`ascood.gain.normalized_gain`) makes datasets comparable; a candidate's score is its worst
dataset's seed-mean gain. Intervals are percentile bootstrap intervals over seeds
(`scipy.stats.bootstrap`), resampling seed indices jointly for every candidate and dataset (the
pairing kept). Two candidates are tied when the interval of their paired difference covers 0.
Without a CE baseline, regret to each dataset's best candidate takes the gain's place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ascood.gain import DEFAULT_FLOOR, MINIMIZED, normalized_gain
from ascood.results import SETTING_COLUMNS, select
from ascood.sweep.objective import objective_rows
from ascood.sweep.spec import Objective

CE = "plain CE baseline"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Cube:
    """values[c, d, s]: candidate c's validation objective on dataset d with seed s."""

    values: np.ndarray
    candidates: list[str]
    datasets: list[str]
    seeds: list[int]
    dropped_seeds: list[int]  # measured somewhere but not for every candidate on every dataset


def cube(table: pd.DataFrame) -> Cube:
    """The paired cube of a (dataset, setting, seed, value) table; every setting must be measured
    on every dataset with at least one common seed."""
    means = table.groupby(["setting", "dataset", "seed"])["value"].mean()
    candidates = sorted(means.index.get_level_values("setting").unique())
    datasets = list(dict.fromkeys(table["dataset"]))
    cells = means.unstack("seed")
    full = cells.reindex(pd.MultiIndex.from_product([candidates, datasets], names=["setting", "dataset"]))
    missing = full.index[full.isna().all(axis=1)]
    if len(missing):
        raise ValueError(f"every setting must be measured on every dataset; missing on {sorted({d for _, d in missing})}")
    seeds = [int(s) for s in full.columns if full[s].notna().all()]
    if not seeds:
        raise ValueError("no seed is measured for every setting on every dataset; candidates cannot be paired")
    dropped = [int(s) for s in full.columns if int(s) not in seeds]
    values = full[seeds].to_numpy().reshape(len(candidates), len(datasets), len(seeds))
    return Cube(values, candidates, datasets, seeds, dropped)


def gains(c: Cube, *, metric: str, floor: float = DEFAULT_FLOOR, ce: str = CE) -> np.ndarray:
    """g[c, d, s] over CE at the same seed."""
    base = c.values[c.candidates.index(ce)]
    return normalized_gain(c.values, base[None], metric=metric, floor=floor)


def worst_gain_over(g: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per candidate, the worst dataset's mean gain over the seeds `idx` (…, S) → (C, …)."""
    return g[:, :, idx.astype(int)].mean(axis=-1).min(axis=1)


def _worst_regret(v: np.ndarray, idx: np.ndarray, metric: str) -> np.ndarray:
    means = v[:, :, idx.astype(int)].mean(axis=-1)  # (C, D, …)
    regret = means - means.min(axis=0, keepdims=True) if metric in MINIMIZED else means.max(axis=0, keepdims=True) - means
    return regret.max(axis=1)


def interval(statistic, n_seeds: int, *, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point, low, high) of a vector statistic of seed indices; NaN bounds with one seed."""
    idx = np.arange(n_seeds)
    point = statistic(idx)
    if n_seeds < 2:
        nan = np.full_like(point, np.nan, dtype=float)
        return point, nan, nan
    res = stats.bootstrap((idx,), lambda i, axis=-1: statistic(i), vectorized=True, n_resamples=n_resamples,
                          confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    return point, np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)


@dataclass(frozen=True)
class Verdict:
    pick: str
    criterion: str  # "gain" (worst-case normalized gain over CE) or "regret" (no CE measured)
    table: pd.DataFrame  # per candidate: scores, intervals, paired difference to the pick, tied
    tied: list[str]  # candidates statistically tied with the pick (not the pick itself)
    seeds: list[int]
    dropped_seeds: list[int]
    eliminated: tuple[str, ...] = ()  # left a race (fewer seeds): separated from the leader earlier

    @property
    def separates(self) -> bool:
        """False when every other setting (plain CE aside) is tied with the pick: none is told apart."""
        others = [s for s in self.table["setting"] if s not in (self.pick, CE)]
        return not others or any(s not in self.tied for s in others)


def verdict(table: pd.DataFrame, *, metric: str, floor: float = DEFAULT_FLOOR, n_resamples: int = 9999,
            seed: int = 0) -> Verdict:
    """The robust pick (largest worst-case gain over CE, else smallest worst-case regret), every
    candidate's scores with intervals, and the candidates tied with the pick."""
    c = cube(table)
    n = len(c.seeds)
    regret, r_lo, r_hi = interval(lambda i: _worst_regret(c.values, i, metric), n, n_resamples=n_resamples, seed=seed)
    out = pd.DataFrame({"setting": c.candidates, "worst_regret": regret, "worst_regret_low": r_lo,
                        "worst_regret_high": r_hi})
    if CE in c.candidates:
        g = gains(c, metric=metric, floor=floor)
        worst, lo, hi = interval(lambda i: worst_gain_over(g, i), n, n_resamples=n_resamples, seed=seed)
        out["worst_gain"], out["worst_gain_low"], out["worst_gain_high"] = worst, lo, hi
        out["mean_gain"] = g.mean(axis=(1, 2))
        for j, d in enumerate(c.datasets):
            out[f"gain/{d}"] = g[:, j].mean(axis=-1)
        order = out.sort_values(["worst_gain", "mean_gain", "setting"], ascending=[False, False, True])
        best = c.candidates.index(order.iloc[0]["setting"])
        score = lambda i: worst_gain_over(g, i)[best] - worst_gain_over(g, i)  # noqa: E731
        criterion = "gain"
    else:
        order = out.sort_values(["worst_regret", "setting"])
        best = c.candidates.index(order.iloc[0]["setting"])
        score = lambda i: _worst_regret(c.values, i, metric) - _worst_regret(c.values, i, metric)[best]  # noqa: E731
        criterion = "regret"
    diff, d_lo, d_hi = interval(score, n, n_resamples=n_resamples, seed=seed)
    out["diff_to_pick"], out["diff_low"], out["diff_high"] = diff, d_lo, d_hi
    pick = c.candidates[best]
    # With one seed nothing is known: every candidate counts as tied.
    out["tied"] = [s != pick and (n < 2 or bool(lo <= 0 <= hi)) for s, lo, hi in zip(c.candidates, d_lo, d_hi, strict=True)]
    out = out.set_index("setting").loc[order["setting"]].reset_index()
    tied = [s for s, t in zip(out["setting"], out["tied"], strict=True) if t]
    return Verdict(pick, criterion, out, tied, c.seeds, c.dropped_seeds)


def delta_to_ce(table: pd.DataFrame, setting: str, *, n_resamples: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Per dataset: the setting's and CE's seed-mean value and their paired difference with its interval."""
    c = cube(table)
    a, b = c.values[c.candidates.index(setting)], c.values[c.candidates.index(CE)]
    delta, lo, hi = interval(lambda i: (a - b)[:, i.astype(int)].mean(axis=-1), len(c.seeds),
                              n_resamples=n_resamples, seed=seed)
    return pd.DataFrame({"dataset": c.datasets, "value": a.mean(axis=-1), "ce": b.mean(axis=-1),
                         "delta": delta, "delta_low": lo, "delta_high": hi})


def setting_id(row: pd.Series | dict) -> str:
    """A stable name for one hyperparameter setting (what the cross-setting pick compares)."""
    return " ".join(f"{k}={_fmt(row[k])}" for k in SETTING_COLUMNS)


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def transfer_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Completed transfer runs at their last epoch, labelled with their setting."""
    rows = select(df, stage="transfer", completed=True, final_epoch=True).copy()
    rows["setting"] = [setting_id(r) if r["method"] == "ascood" else CE for _, r in rows.iterrows()]
    return rows


def transfer_table(rows: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """(dataset, setting, seed, value): the validation objective of every transfer run."""
    if rows.empty:
        return pd.DataFrame(columns=["dataset", "setting", "seed", "value"])
    val = objective_rows(rows, objective)
    table = val.groupby(["benchmark", "setting", "seed"])[objective.name].mean().reset_index()
    return table.rename(columns={"benchmark": "dataset", objective.name: "value"})


def raced_verdict(table: pd.DataFrame, **kw) -> tuple[Verdict, Verdict | None]:
    """(verdict over every candidate at the seeds all share, verdict over the finalists of a race).
    After racing (`transfer.max_seeds`) the leader and those tied with it have more seeds than the
    rest; the finalists are the candidates measured with the most seeds on every dataset. None
    when there was no race."""
    first = verdict(table, **kw)
    per_cell = table.groupby(["setting", "dataset"])["seed"].nunique().groupby("setting").min()
    most = per_cell.max()
    finalists = per_cell.index[per_cell == most]
    if len(finalists) == len(per_cell) or len(finalists) < 2:
        return first, None
    final = verdict(table[table["setting"].isin(finalists)], **kw)
    eliminated = tuple(s for s in first.table["setting"] if s not in set(finalists))
    return first, Verdict(final.pick, final.criterion, final.table, final.tied, final.seeds, final.dropped_seeds,
                          eliminated)
