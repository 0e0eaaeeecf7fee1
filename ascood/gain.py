"""The normalized gain over plain CE: what makes one dataset's improvement comparable to another's.

g = (v − ce) / max(best − ce, floor) for metrics where higher is better (AUROC, AUPR, accuracy,
best = 100), mirrored for FPR@95 (best = 0): g = (ce − v) / max(ce − best, floor). g is the share
of CE's headroom that a setting closes: 0 is CE, 1 is perfect, negative is worse than CE. The
floor (in metric points) keeps a dataset where CE is already near-perfect from turning a
0.1-point wobble into a huge gain or loss.
"""

from __future__ import annotations

import numpy as np

MINIMIZED = frozenset({"fpr95"})  # metrics where lower is better
BEST_VALUE = {"auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0, "id_accuracy": 100.0, "fpr95": 0.0}
DEFAULT_FLOOR = 1.0


def normalized_gain(value, ce, *, metric: str, floor: float = DEFAULT_FLOOR):
    """Element-wise g for arrays (or floats) of a setting's and CE's values of `metric`, in %."""
    if metric not in BEST_VALUE:
        raise ValueError(f"metric: expected one of {', '.join(BEST_VALUE)}, got {metric!r}")
    if not floor > 0:
        raise ValueError(f"floor: expected > 0, got {floor!r}")
    best = BEST_VALUE[metric]
    value, ce = np.asarray(value, dtype=float), np.asarray(ce, dtype=float)
    out = (ce - value) / np.maximum(ce - best, floor) if metric in MINIMIZED else (value - ce) / np.maximum(best - ce, floor)
    return float(out) if out.ndim == 0 else out
