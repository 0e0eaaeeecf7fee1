"""Feature normalization before the final linear layer (the ASCOOD head)."""

from __future__ import annotations

import torch
from torch import Tensor

from ascood.choices import expected_one_of
from ascood.method.kinds import FEATURE_NORMS

ZSCORE_EPS = 1e-6


def normalize_features(h: Tensor, kind: str, sigma: float) -> Tensor:
    """Normalize pooled features `h` (B×m) per sample and scale by σ.

    `zscore` (the method): (h − mean) / (unbiased std + 1e-6) · σ, whose norm is σ·√(m−1)
    (Prop. 2). `l2` (the paper's ablation): h / ‖h‖ · σ. `none`: h unchanged and σ unused, i.e. a
    plain linear head as in the cross-entropy baseline.
    """
    if kind == "zscore":
        mean = h.mean(dim=1, keepdim=True)
        std = h.std(dim=1, keepdim=True, unbiased=True)
        return (h - mean) / (std + ZSCORE_EPS) * sigma
    if kind == "l2":
        return torch.nn.functional.normalize(h, p=2.0, dim=1, eps=1e-12) * sigma
    if kind == "none":
        return h
    raise ValueError(f"feature_norm: {expected_one_of(FEATURE_NORMS, kind)}")
