"""OOD detection metrics, OpenOOD v1.5-compatible, as pure NumPy functions.

Scores are "higher = more in-distribution". All metrics are returned in percent.

FPR@95 has two conventions (docs/results-schema.md):
- ``"openood"`` (default, OpenOOD v1.5 since Aug 2023): OOD is the positive class; the fraction of
  ID samples flagged as OOD at the first threshold that detects ≥ 95% of OOD samples.
- ``"legacy"`` (ODIN / Energy papers): the fraction of OOD samples accepted at the first threshold
  that keeps ≥ 95% of ID samples.

The ROC and PR curves are built exactly as OpenOOD builds them through scikit-learn's defaults:
one point per distinct score, collinear ROC points dropped (`drop_intermediate`), and both areas
integrated with the trapezoid rule (AUPR is *not* average precision).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ascood.choices import one_of

FPR_CONVENTIONS = ("openood", "legacy")
RECALL_LEVEL = 0.95


@dataclass(frozen=True)
class OODMetrics:
    auroc: float
    fpr95: float
    aupr_in: float
    aupr_out: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _binary_clf_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (false positives, true positives) at each distinct score, descending."""
    order = np.argsort(score, kind="mergesort")[::-1]
    score = score[order]
    positive = positive[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(score)), positive.size - 1]
    tps = np.cumsum(positive)[last_of_run]
    fps = (1 + last_of_run) - tps
    return fps.astype(np.float64), tps.astype(np.float64)


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr), starting at (0, 0), with collinear intermediate points dropped."""
    fps, tps = _binary_clf_curve(positive, score)
    if fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def pr_area(positive: np.ndarray, score: np.ndarray) -> float:
    """Trapezoid area under the precision-recall curve, ending at (recall 0, precision 1)."""
    fps, tps = _binary_clf_curve(positive, score)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    precision = np.r_[precision[::-1], 1.0]
    recall = np.r_[recall[::-1], 0.0]
    return float(-np.trapezoid(precision, recall))


def _fpr_at_recall(positive: np.ndarray, score: np.ndarray, level: float) -> float:
    fpr, tpr = roc_curve(positive, score)
    return float(fpr[np.argmax(tpr >= level)])


def ood_metrics(id_scores, ood_scores, *, fpr_convention: str = "openood") -> OODMetrics:
    """AUROC, FPR@95, AUPR-In and AUPR-Out (percent) of ID scores against one OOD set's scores."""
    one_of(fpr_convention, FPR_CONVENTIONS, "fpr_convention")
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError("ood_metrics needs at least one ID and one OOD score")
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
        raise ValueError("ood_metrics: scores contain NaN or inf")
    score = np.r_[id_scores, ood_scores]
    is_ood = np.r_[np.zeros(id_scores.size), np.ones(ood_scores.size)]
    fpr, tpr = roc_curve(is_ood, -score)
    auroc = float(np.trapezoid(tpr, fpr))
    if fpr_convention == "openood":
        fpr95 = float(fpr[np.argmax(tpr >= RECALL_LEVEL)])
    else:
        fpr95 = _fpr_at_recall(1.0 - is_ood, score, RECALL_LEVEL)
    return OODMetrics(
        auroc=100.0 * auroc,
        fpr95=100.0 * fpr95,
        aupr_in=100.0 * pr_area(1.0 - is_ood, score),
        aupr_out=100.0 * pr_area(is_ood, -score),
    )


def accuracy(logits_argmax: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float(np.mean(np.asarray(logits_argmax) == np.asarray(labels)))
