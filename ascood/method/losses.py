"""The ASCOOD objective: cross-entropy on ID, KL(U ‖ softmax) on synthesized outliers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def uniform_kl(logits: Tensor) -> Tensor:
    """Batch mean of KL(U ‖ softmax(logits)) with U uniform over the C classes.

    KL(U‖p) = Σ_k (1/C)(log(1/C) − log p_k) = −log C − mean_k log p_k; its gradient on logit k is
    p_k − 1/C.
    """
    num_classes = logits.shape[1]
    return -math.log(num_classes) - F.log_softmax(logits, dim=1).mean(dim=1).mean()


def ascood_loss(logits_id: Tensor, y: Tensor, logits_ood: Tensor, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """L = CE(logits_id, y) + λ·KL(U ‖ softmax(logits_ood)); returns (total, ce, kl).

    Per-sample gradient on the logits (Prop. 1): (p − y) on ID, λ(p′ − 1/C) on outliers, each
    divided by the batch size.
    """
    ce = F.cross_entropy(logits_id, y)
    kl = uniform_kl(logits_ood)
    return ce + lam * kl, ce, kl


def logitnorm_loss(logits: Tensor, y: Tensor, tau: float) -> Tensor:
    """LogitNorm (Wei et al., ICML 2022): CE(z / (τ·(‖z‖₂ + 1e-7)), y). Only the logits' direction is
    trained, so their norm cannot grow to make every input confident; τ = 0.04 (the paper's CIFAR value)."""
    norms = torch.linalg.vector_norm(logits, dim=1, keepdim=True) + 1e-7
    return F.cross_entropy(logits / (norms * tau), y)
