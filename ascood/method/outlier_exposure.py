"""Outlier Exposure with external outliers: OE (Hendrycks et al., ICLR 2019) and MixOE (Zhang et
al., WACV 2023), as pure functions on tensors.

OE: CE on ID + λ·KL(U‖p) on a batch of external outliers, both through one forward pass. The
reference writes the outlier term as the cross-entropy to the uniform distribution,
−mean_k log p_k = KL(U‖p) + log C: the same gradient, reported here as the KL (so it reads like
ASCOOD's).

MixOE: each ID image is mixed with an outlier, by mixup (λx + (1−λ)x_o) or cutmix (a box of the
outlier pasted into the ID image, λ then the ID share of the pixels), λ ~ Beta(α, α) once per step;
its target is λ·onehot(y) + (1−λ)·U and the loss CE(x, y) + β·softCE(mixed, target). The mixing
ratio and the box are host draws (the reference's NumPy draws), so the step never reads the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ascood.method.losses import ascood_loss

MIX_OPS = ("mixup", "cutmix")


def oe_loss(logits_id: Tensor, y: Tensor, logits_out: Tensor, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """CE(logits_id, y) + λ·KL(U ‖ softmax(logits_out)); returns (total, ce, kl)."""
    return ascood_loss(logits_id, y, logits_out, lam)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pasted box: sides √(1−λ) of the image's, centred on a
    uniform pixel, clipped to the image (the reference's `rand_bbox`)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    left, right = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return top, bottom, left, right


def mix(x: Tensor, x_out: Tensor, op: str, lam: float, rng: np.random.Generator) -> tuple[Tensor, float]:
    """The mixed batch and the ID share λ it actually has (cutmix: of the pixels, after clipping)."""
    if op == "mixup":
        return lam * x + (1.0 - lam) * x_out, lam
    if op != "cutmix":
        raise ValueError(f"mix op: expected one of {', '.join(MIX_OPS)}, got {op!r}")
    h, w = x.shape[-2:]
    top, bottom, left, right = cutmix_box(h, w, lam, rng)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x_out[:, :, top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (h * w)


def mixed_targets(y: Tensor, num_classes: int, lam: float) -> Tensor:
    """λ·onehot(y) + (1−λ)/C: the label's share is the ID share of the mix. (Not `F.one_hot`,
    which checks the labels' range on the host.)"""
    onehot = (y[:, None] == torch.arange(num_classes, device=y.device)).float()
    return lam * onehot + (1.0 - lam) / num_classes


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Batch mean of −Σ_k t_k log softmax(logits)_k."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mixoe_loss(logits_id: Tensor, y: Tensor, logits_mixed: Tensor, lam: float, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """CE(logits_id, y) + β·softCE(logits_mixed, λ·onehot(y) + (1−λ)·U); returns (total, ce, mixed)."""
    ce = F.cross_entropy(logits_id, y)
    mixed = soft_cross_entropy(logits_mixed, mixed_targets(y, logits_id.shape[1], lam))
    return ce + beta * mixed, ce, mixed


def mix_ratio(alpha: float, rng: np.random.Generator) -> float:
    """λ ~ Beta(α, α), drawn on the host."""
    return float(rng.beta(alpha, alpha))

