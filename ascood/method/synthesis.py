"""Outlier synthesis: one virtual outlier per ID image, from the current model's saliency.

All functions are pure: they take the normalized batch `x` (B×C×H×W), its saliency `G` and plain
numbers, and return a detached outlier batch `x'` of the same shape. Nothing is clamped to the
valid pixel range (as released).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ascood.choices import expected_one_of
from ascood.method.kinds import SYNTHESIS_KINDS


def num_kept_entries(size: int, p_inv: float) -> int:
    """n = ⌊size · p_inv⌋, as the released code's `int(...)`; at least one entry must survive."""
    n = int(size * p_inv)
    if n < 1:
        raise ValueError(f"p_inv={p_inv} keeps no entry of an input with {size} entries; raise p_inv")
    return n


def topk_mask(scores: Tensor, n: int) -> Tensor:
    """0/1 mask (same shape as `scores`, B×…) keeping the n largest entries of each sample."""
    flat = scores.flatten(1)
    idx = flat.topk(n, dim=1, sorted=False).indices
    mask = torch.zeros_like(flat).scatter_(1, idx, 1.0)
    return mask.view_as(scores)


def gradient_outliers(x: Tensor, grad: Tensor, alpha: float, p_inv: float, *, subtract: bool = False) -> Tensor:
    """x' = x ± α·G⊙M, M keeping the ⌊C·H·W·p_inv⌋ largest |G| over channels and pixels together.

    Adding (the method) destroys the invariant features while raising the true-class logit, which
    gives hard "confident but wrong" outliers; subtracting is the paper's weaker ablation.
    """
    n = num_kept_entries(x[0].numel(), p_inv)
    mask = topk_mask(grad.abs(), n)
    step = alpha * grad * mask
    return (x - step if subtract else x + step).detach()


def shuffle_outliers(x: Tensor, grad: Tensor, p_inv: float, generator: torch.Generator | None = None) -> Tensor:
    """Randomly permute the pixel vectors at the ⌊H·W·p_inv⌋ most salient locations.

    Locations are ranked by Σ_c exp(G_c) (the *signed* gradient, as released); logsumexp gives
    the same ranking without overflow. Each sample gets its own permutation of its own locations;
    every other pixel is untouched.
    """
    b, c, h, w = x.shape
    n = num_kept_entries(h * w, p_inv)
    rank = torch.logsumexp(grad.float(), dim=1).flatten(1)
    loc = rank.topk(n, dim=1, sorted=False).indices
    noise = torch.rand(b, n, generator=generator, device="cpu" if generator is None else generator.device)
    perm = noise.to(x.device).argsort(dim=1)
    src = loc.gather(1, perm)
    flat = x.detach().flatten(2)
    out = flat.clone()
    out.scatter_(2, loc[:, None, :].expand(b, c, n), flat.gather(2, src[:, None, :].expand(b, c, n)))
    return out.view_as(x)


def gaussian_outliers(x: Tensor, alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """x' = α·N(0, I): pure noise of the batch's shape, not added to x (one released CelebA config)."""
    device = "cpu" if generator is None else generator.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    return (alpha * noise).to(device=x.device, dtype=x.dtype)


def same_layout(t: Tensor, like: Tensor) -> Tensor:
    """`t` in `like`'s memory layout: an NCHW outlier half would make the concatenated ID + outlier
    batch fall back from channels_last, and every convolution of the step with it."""
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


def synthesize(
    kind: str,
    x: Tensor,
    grad: Tensor | None,
    *,
    alpha: float,
    p_inv: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Dispatch on the synthesis kind (`ood_type` in the released configs); x' in x's layout."""
    if kind == "gradient":
        out = gradient_outliers(x, grad, alpha, p_inv)
    elif kind == "gradient-subtract":
        out = gradient_outliers(x, grad, alpha, p_inv, subtract=True)
    elif kind == "shuffle":
        out = shuffle_outliers(x, grad, p_inv, generator)
    elif kind == "gaussian":
        out = gaussian_outliers(x, alpha, generator)
    else:
        raise ValueError(f"ood_type: {expected_one_of(SYNTHESIS_KINDS, kind)}")
    return same_layout(out, x)


ALPHA_SCALES = ("absolute", "relative")


def batch_norm2(t: Tensor) -> Tensor:
    """mean over the batch of each sample's L2 norm (a 0-d tensor)."""
    return t.flatten(1).float().norm(dim=1).mean()


def relative_alpha(x: Tensor, unit: Tensor, alpha_rel: float) -> Tensor:
    """α_eff = α_rel · mean_b‖x_b‖₂ / mean_b‖u_b‖₂ for a unit perturbation u (a detached 0-d tensor
    on x's device, no host sync); 0 when the perturbation is zero everywhere."""
    den = batch_norm2(unit)
    ratio = alpha_rel * batch_norm2(x) / den.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(den > 0, ratio, torch.zeros_like(ratio)).detach()


def synthesize_scaled(
    kind: str,
    x: Tensor,
    grad: Tensor | None,
    *,
    alpha: float,
    p_inv: float,
    alpha_scale: str = "absolute",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """(x', α_eff). `absolute`: α as released (α_eff = α). `relative`: α is scale-free, the
    perturbation's size is α times the input's: for the gradient kinds mean_b‖x'_b − x_b‖ =
    α · mean_b‖x_b‖; for `gaussian` the noise RMS is α times the batch's RMS. `shuffle` has no α."""
    if alpha_scale == "absolute":
        return synthesize(kind, x, grad, alpha=alpha, p_inv=p_inv, generator=generator), x.new_full((), alpha).float()
    if alpha_scale != "relative":
        raise ValueError(f"alpha_scale: {expected_one_of(ALPHA_SCALES, alpha_scale)}")
    if kind == "shuffle":
        raise ValueError("alpha_scale: relative α needs a perturbation size; ood_type shuffle has no α")
    if kind == "gaussian":
        noise = gaussian_outliers(x, 1.0, generator)
        rms = lambda t: t.float().pow(2).mean().sqrt()  # noqa: E731
        alpha_eff = torch.where(rms(noise) > 0, alpha * rms(x) / rms(noise).clamp_min(1e-30), 0.0).detach()
        return same_layout((alpha_eff * noise).to(x.dtype).detach(), x), alpha_eff
    unit = synthesize(kind, x, grad, alpha=1.0, p_inv=p_inv, generator=generator) - x.detach()
    alpha_eff = relative_alpha(x, unit, alpha)
    return same_layout((x.detach() + alpha_eff.to(x.dtype) * unit).detach(), x), alpha_eff


def needs_saliency(kind: str) -> bool:
    return kind != "gaussian"
