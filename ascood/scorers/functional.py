"""Scores as pure functions on logits or on a model and its input (higher = more ID)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def msp(logits: Tensor) -> Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel, 2017)."""
    return logits.softmax(dim=1).amax(dim=1)


def max_logit(logits: Tensor) -> Tensor:
    """Maximum logit (Hendrycks et al., 2022)."""
    return logits.amax(dim=1)


def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative free energy T·logsumexp(logits/T) (Liu et al., 2020)."""
    return temperature * torch.logsumexp(logits / temperature, dim=1)


def odin_perturbation(
    model: nn.Module, x: Tensor, temperature: float, std: Tensor, top_k: int | None = None
) -> Tensor:
    """The input step of ODIN, −sign(∇ₓ CE(f(x)/T, ŷ)) / std_c, optionally kept on k entries only.

    ŷ is the predicted class. As in OpenOOD the sign maps a zero gradient to +1. With `top_k`
    (i-ODIN) the step is masked to the k entries of largest |∇| over channels and pixels.
    """
    with torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        logits = model(x_req)
        loss = F.cross_entropy(logits / temperature, logits.detach().argmax(dim=1), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_req)
    step = -torch.where(grad >= 0, 1.0, -1.0) / std.view(1, -1, 1, 1).to(x.device)
    if top_k is not None:
        flat = grad.abs().flatten(1)
        keep = torch.zeros_like(flat).scatter_(1, flat.topk(top_k, dim=1).indices, 1.0)
        step = step * keep.view_as(step)
    return step


def odin(model: nn.Module, x: Tensor, temperature: float, epsilon: float, std: Tensor, top_k: int | None = None) -> Tensor:
    """max softmax(f(x + ε·step)/T), step from `odin_perturbation` (ODIN; i-ODIN with `top_k`)."""
    x_tilde = x + epsilon * odin_perturbation(model, x, temperature, std, top_k)
    with torch.no_grad():
        return (model(x_tilde) / temperature).softmax(dim=1).amax(dim=1)
