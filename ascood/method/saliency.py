"""Gradient attribution: the input gradient of each sample's true-class logit."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def true_class_saliency(model: nn.Module, x: Tensor, y: Tensor, *, train_mode: bool = False) -> Tensor:
    """G = ∂ z_y(x) / ∂x for every sample of the batch.

    Only the input gradient is computed (`torch.autograd.grad` w.r.t. `x`): no parameter gradient
    is filled, so nothing accumulates in `.grad` and no DDP gradient hook fires. Pass the
    *unwrapped* module under DDP. In eval mode (the released default) BatchNorm uses its running
    statistics, so samples do not interact and the batch result equals per-sample saliency; train
    mode uses (and updates) batch statistics. The model's mode is restored afterwards.
    """
    was_training = model.training
    model.train(train_mode)
    try:
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            logits = model(x_req)
            (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x_req)
    finally:
        model.train(was_training)
    return grad


def saliency_from_logits(logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Input gradient of the true-class logits of an existing forward pass (keeps its graph).

    Used by the train-mode variant that reuses the ID forward pass of the training step, so the
    saliency costs one input-only backward instead of a forward and a backward.
    """
    (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x, retain_graph=True)
    return grad
