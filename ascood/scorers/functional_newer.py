"""Pure functions behind the newer scorers (fDBD, NCI, NECO, GradNorm, DICE, SHE, KL matching,
AdaSCALE): tensors in, tensors out, no model state. Higher = more ID where a score is returned.

`x` is whatever the final linear layer is fed in the scorer's chosen space (the pooled features
or the head's normalized features) and `weight`/`bias` that layer's parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ascood.scorers.functional import row_chunks


def boundary_denominators(weight: Tensor) -> Tensor:
    """C×C matrix of ‖w_c − w_p‖ (row p: the predicted class), 1 on the diagonal (fDBD)."""
    w = weight.double()
    d = torch.cdist(w, w)
    return d.fill_diagonal_(1.0)


def fdbd(logits: Tensor, x: Tensor, denominators: Tensor, mean: Tensor | None) -> Tensor:
    """fDBD (Liu & Qin, ICML 2024): Σ_c |z_ŷ − z_c| / ‖w_ŷ − w_c‖, the summed distances of x to
    the decision boundaries of its predicted class ŷ, over ‖x − mean‖ (or ‖x‖ when mean is None)."""
    z = logits.double()
    top, pred = z.max(dim=1)
    dist = ((top[:, None] - z).abs() / denominators[pred]).sum(dim=1)
    x = x.double()
    return dist / (x if mean is None else x - mean).norm(dim=1)


def nci_terms(logits: Tensor, x: Tensor, weight: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """NCI's two terms (Liu & Qin, CVPR 2025): ⟨w_ŷ, x − μ⟩ / ‖x − μ‖ and ‖x‖₁; the score is
    the first plus α times the second."""
    pred = logits.argmax(dim=1)
    x = x.double()
    c = x - mean
    proximity = (weight.double()[pred] * c).sum(dim=1) / c.norm(dim=1)
    return proximity, x.abs().sum(dim=1)


def standard_scaler(h: Tensor) -> tuple[Tensor, Tensor]:
    """Column mean and std (ddof 0) of h, a zero std replaced by 1 (scikit-learn's StandardScaler)."""
    h = h.double()
    mean, std = h.mean(dim=0), h.std(dim=0, unbiased=False)
    return mean, torch.where(std == 0, torch.ones_like(std), std)


def principal_axes(z: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of z and the eigenvectors of its ML covariance as columns, by descending eigenvalue
    (PCA's components up to sign)."""
    z = z.double()
    mean = z.mean(dim=0)
    c = z - mean
    eigvals, eigvecs = torch.linalg.eigh(c.T @ c / c.shape[0])
    return mean, eigvecs[:, eigvals.argsort(descending=True)]


def neco_ratio(z: Tensor, pca_mean: Tensor, axes: Tensor, dims: int) -> Tensor:
    """NECO's ‖P_d(z)‖ / ‖z‖ (Ammar et al., ICLR 2024): norm of the PCA projection of z on its
    first `dims` axes over the norm of z itself."""
    z = z.double()
    return ((z - pca_mean) @ axes[:, :dims]).norm(dim=1) / z.norm(dim=1)


def gradnorm(logits: Tensor, x: Tensor) -> Tensor:
    """GradNorm (Huang et al., NeurIPS 2021) in closed form: the L1 norm of ∂L/∂W of the last
    layer for L = −Σ_c log softmax(z)_c (all-ones targets, as the released code and OpenOOD).

    ∂L/∂z_k = C·p_k − 1 and ∂L/∂W_kd = (C·p_k − 1)·x_d, so ‖∂L/∂W‖₁ = (Σ_k |C·p_k − 1|)·‖x‖₁, x
    the layer's input. (KL(U‖softmax) as in the paper is L/C − log C: the same score over C.)
    """
    p = logits.double().softmax(dim=1)
    return (p * p.shape[1] - 1.0).abs().sum(dim=1) * x.double().abs().sum(dim=1)


def dice_mask(mean_activation: Tensor, weight: Tensor, percentile: float) -> Tensor:
    """DICE's weight mask (Sun & Li, ECCV 2022): 1 where the contribution mean_d · W_cd exceeds
    the p-th percentile (linear interpolation, as np.percentile) of all C×D contributions."""
    contrib = mean_activation.double()[None, :] * weight.double()
    threshold = float(np.percentile(contrib.numpy().ravel(), percentile))
    return (contrib > threshold).double()


def class_patterns(features: Tensor, labels: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """SHE's stored patterns (Zhang et al., ICLR 2023): per class, the mean feature of training
    samples of that class predicted correctly; of all its samples where none is; zeros where the
    class has no sample."""
    h = features.double()
    out = torch.zeros(num_classes, h.shape[1], dtype=torch.float64)
    for c in range(num_classes):
        for rows in (labels == c) & (preds == c), labels == c:
            if rows.any():
                out[c] = h[rows].mean(dim=0)
                break
    return out


def class_mean_probabilities(probs: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """KL matching's templates: per class the mean softmax of samples predicted as it, one-hot
    where no sample is (OpenOOD's choice)."""
    p = probs.double()
    out = torch.eye(num_classes, dtype=torch.float64)
    for c in range(num_classes):
        rows = preds == c
        if rows.any():
            out[c] = p[rows].mean(dim=0)
    return out


def kl_divergences(probs: Tensor, templates: Tensor, *, chunk: int | None = None) -> Tensor:
    """N×K KL(p_n ‖ q_k) with both sides normalized to sum 1 and SciPy's conventions
    (0·log 0 = 0, p·log(p/0) = ∞), in query chunks: Σ p log p − p·log qᵀ, no N×K×C block."""
    p = probs.double()
    p = p / p.sum(dim=1, keepdim=True)
    q = templates.double()
    q = q / q.sum(dim=1, keepdim=True)
    zero = q == 0
    log_q = torch.where(zero, torch.zeros_like(q), q.log())
    out = []
    for s in row_chunks(p.shape[0], q.shape[0] + q.shape[1], chunk):
        ps = p[s]
        kl = torch.special.xlogy(ps, ps).sum(dim=1, keepdim=True) - ps @ log_q.T
        infinite = (ps > 0).double() @ zero.double().T > 0
        out.append(torch.where(infinite, torch.full_like(kl, torch.inf), kl))
    return torch.cat(out)


def least_salient_step(grad: Tensor, fraction: float, epsilon: float) -> Tensor:
    """AdaSCALE's input step: ε·sign(∇) on the ⌊fraction·C·H·W⌋ entries of smallest |∇| of each
    sample, 0 elsewhere (sign(0) = 0, as torch.sign in the released code)."""
    flat = grad.abs().flatten(1)
    n = int(flat.shape[1] * fraction)
    mask = torch.zeros_like(flat)
    if n > 0:
        mask.scatter_(1, flat.topk(n, dim=1, largest=False).indices, 1.0)
    return epsilon * grad.sign() * mask.view_as(grad)


def top_count(dim: int, percent: float) -> int:
    """How many of `dim` activations `percent` % is, ⌊dim·percent/100⌋ as released, at least 1."""
    return max(1, int(dim * percent / 100))


def oodness(h: Tensor, h_perturbed: Tensor, k1: int, k2: int, lmbda: float) -> Tensor:
    """AdaSCALE's Q′ = C_o + λ·Q: C_o sums relu(h̃) over the k1 largest activations of h, Q sums
    |h − h̃| over its k2 largest (indices always from the unperturbed h)."""
    h, ht = h.double(), h_perturbed.double()
    c_o = ht.relu().gather(1, h.topk(k1, dim=1).indices).sum(dim=1)
    q = (h - ht).abs().gather(1, h.topk(k2, dim=1).indices).sum(dim=1)
    return c_o + lmbda * q


def ecdf(sorted_reference: Tensor, values: Tensor) -> Tensor:
    """Empirical CDF of a sorted reference at `values`: the fraction of it ≤ each value."""
    ref = sorted_reference.double()
    v = values.double().to(ref.device)
    return torch.searchsorted(ref, v, right=True).double() / ref.numel()


def adaptive_scale(h: Tensor, percentiles: Tensor) -> Tensor:
    """AdaSCALE's per-sample SCALE factor: Σ relu(h) / Σ of its top-k_i, k_i = D − round(D·p_i/100)
    (at least 1), for a percentile p_i per sample."""
    a = h.double().relu()
    d = a.shape[1]
    ks = (d - torch.round(d * percentiles.double().to(a.device) / 100.0)).long().clamp(min=1, max=d)
    top = a.topk(int(ks.max()), dim=1).values
    keep = torch.arange(top.shape[1], device=a.device)[None, :] < ks[:, None]
    return a.sum(dim=1) / (top * keep).sum(dim=1)
