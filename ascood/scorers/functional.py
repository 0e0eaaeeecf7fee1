"""Scores as pure functions on logits or on a model and its input (higher = more ID)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
    return odin_perturbations(model, x, [temperature], std, top_k)[temperature]


def odin_perturbations(
    model: nn.Module, x: Tensor, temperatures: list[float], std: Tensor, top_k: int | None = None
) -> dict[float, Tensor]:
    """`odin_perturbation` at every temperature, from one forward pass: f(x) and ŷ do not depend on
    T, only the loss backpropagated through them does (1.75× faster over ODIN's four
    temperatures, small CNN, CPU; bit-identical steps)."""
    temps = list(dict.fromkeys(temperatures))
    steps = {}
    with torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        logits = model(x_req)
        pred = logits.detach().argmax(dim=1)
        for i, t in enumerate(temps):
            loss = F.cross_entropy(logits / t, pred, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_req, retain_graph=i < len(temps) - 1)
            step = -torch.where(grad >= 0, 1.0, -1.0) / std.view(1, -1, 1, 1).to(x.device)
            if top_k is not None:
                flat = grad.abs().flatten(1)
                keep = torch.zeros_like(flat).scatter_(1, flat.topk(top_k, dim=1).indices, 1.0)
                step = step * keep.view_as(step)
            steps[t] = step
    return steps


def odin(model: nn.Module, x: Tensor, temperature: float, epsilon: float, std: Tensor, top_k: int | None = None) -> Tensor:
    """max softmax(f(x + ε·step)/T), step from `odin_perturbation` (ODIN; i-ODIN with `top_k`)."""
    x_tilde = x + epsilon * odin_perturbation(model, x, temperature, std, top_k)
    with torch.no_grad():
        return (model(x_tilde) / temperature).softmax(dim=1).amax(dim=1)


def gen(logits: Tensor, gamma: float = 0.1, top_m: int = 100) -> Tensor:
    """Generalized entropy (Liu et al., CVPR 2023): −Σ_{top-M} p^γ (1 − p)^γ."""
    p = logits.softmax(dim=1)
    m = min(top_m, p.shape[1])
    top = p.topk(m, dim=1).values
    return -(top.pow(gamma) * (1.0 - top).pow(gamma)).sum(dim=1)


def l2_normalize(x: Tensor) -> Tensor:
    return x / (x.norm(dim=1, keepdim=True) + 1e-10)


CHUNK_ELEMENTS = 2**24
"""The most elements of one queries-by-bank block (128 MiB in float64): a bank score computes its
queries in chunks so memory stays bounded on large banks (an N×M block is gigabytes on ImageNet)."""


_UNCHUNKED = False


@contextmanager
def unchunked() -> Iterator[None]:
    """Every bank score in one block for the duration: what a graph export traces, since a loop
    over `len(queries)` would fix the batch size into the graph (a serving batch is small)."""
    global _UNCHUNKED
    before, _UNCHUNKED = _UNCHUNKED, True
    try:
        yield
    finally:
        _UNCHUNKED = before


def row_chunks(n: int, width: int, chunk: int | None = None) -> list[slice]:
    """Slices of `chunk` rows covering n rows (default: as many rows of `width` columns as fit in
    `CHUNK_ELEMENTS`); n = 0 gives one empty slice, so results still concatenate. Under
    `unchunked()`, one slice of every row."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk: expected a positive number of rows, got {chunk}")
    if _UNCHUNKED:
        return [slice(None)]
    step = chunk or max(1, CHUNK_ELEMENTS // max(1, width))
    return [slice(i, i + step) for i in range(0, max(n, 1), step)]


def nearest_distances(z: Tensor, bank: Tensor, k: int, *, chunk: int | None = None) -> Tensor:
    """N×min(k, M) Euclidean distances of every query to its nearest bank rows, ascending."""
    k = min(k, bank.shape[0])
    return torch.cat(
        [torch.cdist(z[s], bank).topk(k, dim=1, largest=False).values for s in row_chunks(z.shape[0], bank.shape[0], chunk)]
    )


def knn_distance(features: Tensor, bank: Tensor, k: int, *, chunk: int | None = None) -> Tensor:
    """Distance of each L2-normalized feature to its k-th nearest L2-normalized bank feature (k is
    capped at the bank size)."""
    z, zb = l2_normalize(features.double()), l2_normalize(bank.double())
    return nearest_distances(z, zb, k, chunk=chunk)[:, -1]


def top_similarities(z: Tensor, bank: Tensor, k: int, *, chunk: int | None = None) -> Tensor:
    """N×min(k, M) largest inner products of every query with the bank rows, descending."""
    k = min(k, bank.shape[0])
    return torch.cat([(z[s] @ bank.T).topk(k, dim=1).values for s in row_chunks(z.shape[0], bank.shape[0], chunk)])


def class_gaussians(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class means and the precision of the shared (tied) covariance (maximum likelihood)."""
    h = features.double()
    means = torch.stack([h[labels == c].mean(dim=0) for c in range(num_classes)])
    centered = h - means[labels]
    cov = centered.T @ centered / h.shape[0]
    return means, torch.linalg.pinv(cov, hermitian=True)


def mahalanobis(features: Tensor, means: Tensor, precision: Tensor, *, chunk: int | None = None) -> Tensor:
    """Squared Mahalanobis distance of every feature to every mean: N×C, in float64.

    Expanded as xᵀPx − xᵀ(P + Pᵀ)μ + μᵀPμ, so no N×C×D difference tensor is built; x and μ are
    first centered on the mean of the means, which keeps the terms (and their cancellation) small.
    """
    origin = means.double().mean(dim=0)
    mu, x = means.double() - origin, features.double()
    cross = mu @ (precision + precision.T)
    mpm = ((mu @ precision) * mu).sum(dim=1)
    out = []
    for s in row_chunks(x.shape[0], x.shape[1] + mu.shape[0], chunk):
        xs = x[s] - origin
        out.append(((xs @ precision) * xs).sum(dim=1, keepdim=True) - xs @ cross.T + mpm)
    return torch.cat(out)


def energy_from(logits: Tensor) -> Tensor:
    return torch.logsumexp(logits, dim=1)
