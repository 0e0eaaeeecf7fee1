"""The detector's operating point, as pure functions on score arrays.

Convention (OpenOOD's): a higher score means more in-distribution; a sample is flagged OOD when
its score is below the threshold. The threshold is the largest value that keeps at least the
target share of ID validation scores at or above it: the k-th largest validation score with
k = ⌈tpr·n⌉. The share actually reached is k/n plus any ties at the threshold, so it is the target
rounded up to the next sample (unless scores tie there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class ThresholdError(ValueError):
    """A target TPR outside (0, 1), or no usable validation scores; one line."""


def check_tpr(tpr: float) -> float:
    if not (isinstance(tpr, int | float) and math.isfinite(tpr) and 0.0 < tpr < 1.0):
        raise ThresholdError(f"--tpr: expected a number in (0, 1) (e.g. 0.95), got {tpr!r}")
    return float(tpr)


def calibrate(id_scores: np.ndarray, tpr: float) -> float:
    """The largest τ with mean(id_scores ≥ τ) ≥ tpr (the k-th largest score, k = ⌈tpr·n⌉)."""
    tpr = check_tpr(tpr)
    s = np.asarray(id_scores, dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise ThresholdError(f"validation ID scores: expected finite scores, got {s.size} with "
                             f"{int((~np.isfinite(s)).sum())} NaN or infinite")
    k = max(1, math.ceil(tpr * s.size - 1e-9))  # the tolerance keeps 0.95·100 from becoming 96
    return float(np.sort(s)[::-1][k - 1])


def accepted(scores: np.ndarray, threshold: float) -> np.ndarray:
    """True where a sample is taken as ID (score ≥ threshold); OOD is the complement."""
    return np.asarray(scores, dtype=np.float64) >= threshold


def rate(scores: np.ndarray, threshold: float) -> float:
    """Share of the samples accepted as ID at the threshold (the TPR on ID, the FPR on OOD)."""
    s = np.asarray(scores)
    return float(accepted(s, threshold).mean()) if s.size else float("nan")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    target_tpr: float
    val_tpr: float  # share of ID validation scores ≥ threshold
    n_val: int

    def as_dict(self) -> dict:
        return {"value": self.threshold, "target_tpr": self.target_tpr, "val_id_tpr": self.val_tpr,
                "n_val_id": self.n_val, "rule": "largest t with share(val ID score >= t) >= target_tpr; "
                                                "OOD when score < t"}


def operating_point(val_id_scores: np.ndarray, tpr: float) -> OperatingPoint:
    t = calibrate(val_id_scores, tpr)
    return OperatingPoint(t, float(tpr), rate(val_id_scores, t), int(np.asarray(val_id_scores).size))
