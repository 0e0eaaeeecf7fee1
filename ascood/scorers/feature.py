"""Scorers that need the pooled features (and, for some, ID training features or the head).

Features are the pre-normalization pooled features `h` (what OpenOOD's `return_feature` gives on
the released ASCOOD network). Where a scorer needs logits of modified features (ReAct, ASH,
SCALE) the default `feature_path="fc"` feeds them to the final linear layer directly, bypassing
the z-score and σ: that is what the released evaluation does (OpenOOD's ReactNet/ASHNet/ScaleNet
wrappers call the network's fc on the modified raw feature), so the published SCALE numbers come
from it. `feature_path="head"` passes them through the trained head instead; note that z-scoring
undoes any rescaling, so SCALE with "head" equals energy. ViM works in the space the linear layer
sees (the normalized features), where logits are linear in them; OpenOOD's ViM cannot run on the
released network (it has no `get_fc`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ascood.method.normalization import normalize_features
from ascood.scorers import functional as Fs
from ascood.scorers.base import Outputs, Scorer


@dataclass(frozen=True)
class HeadCopy:
    """What a score needs of the model's `NormalizedLinear` head, copied to the CPU at setup (the
    device rule of `ascood.scorers.base`): logits of modified features without the live head."""

    weight: Tensor
    bias: Tensor | None
    feature_norm: str
    sigma: float

    @classmethod
    def of(cls, head: nn.Module) -> HeadCopy:
        bias = head.fc.bias
        return cls(
            head.fc.weight.detach().to("cpu", copy=True),
            None if bias is None else bias.detach().to("cpu", copy=True),
            str(head.feature_norm),
            float(head.sigma),
        )

    def fc(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def forward(self, h: Tensor) -> Tensor:
        """The head's own logits, fc(norm(h)·σ)."""
        return self.fc(normalize_features(h, self.feature_norm, self.sigma))


class _ModifiedFeatureScorer(Scorer):
    """Energy of the logits of modified features."""

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        self.head_copy = HeadCopy.of(head)

    def logits_of(self, h: Tensor) -> Tensor:
        x = h.to(self.head_copy.weight.dtype)
        return self.head_copy.fc(x) if self.p["feature_path"] == "fc" else self.head_copy.forward(x)


class ReAct(_ModifiedFeatureScorer):
    """ReAct (Sun et al., NeurIPS 2021): clip features at the p-th percentile of ID training
    activations, then energy. (OpenOOD takes the percentile on ID validation features.)"""

    name = "react"
    needs_train = True
    defaults = {"percentile": 90.0, "feature_path": "fc"}
    grid = {"percentile": [85.0, 90.0, 95.0, 99.0]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        super().setup(train, head)
        self.threshold = float(np.percentile(train.features.numpy().ravel(), self.p["percentile"]))

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.energy_from(self.logits_of(outputs.features.clamp(max=self.threshold)))


class KNN(Scorer):
    """KNN (Sun et al., ICML 2022): minus the distance of the L2-normalized feature to its k-th
    nearest L2-normalized ID training feature (OpenOOD negates the squared distance: same ranking,
    same metrics). k is capped at the bank size."""

    name = "knn"
    needs_train = True
    defaults = {"k": 50}
    grid = {"k": [50, 100, 200, 500, 1000]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        self.bank = train.features

    def postprocess(self, outputs: Outputs) -> Tensor:
        return -Fs.knn_distance(outputs.features, self.bank, self.p["k"])

    def grid_scores(
        self, train: Outputs | None, head: nn.Module | None, sets: list[Outputs], points: list[dict]
    ) -> list[list[Tensor]]:
        """One normalization of the bank and one top-k per set at the largest k serve every k."""
        ks = [type(self)(**{**self.p, **pt}).p["k"] for pt in points]
        bank = Fs.l2_normalize(train.features.double())
        columns = [min(k, bank.shape[0]) - 1 for k in ks]
        out: list[list[Tensor]] = [[] for _ in points]
        for o in sets:
            d = Fs.nearest_distances(Fs.l2_normalize(o.features.double()), bank, max(ks))
            for scores, c in zip(out, columns, strict=True):
                scores.append(-d[:, c])
        return out


class MDS(Scorer):
    """Mahalanobis (Lee et al., NeurIPS 2018), feature-only as in OpenOOD (no input perturbation,
    penultimate layer only): max over classes of minus the distance to the class mean under the
    shared covariance of ID training features."""

    name = "mds"
    needs_train = True

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        c = int(train.labels.max()) + 1
        self.means, self.precision = Fs.class_gaussians(train.features, train.labels, c)

    def postprocess(self, outputs: Outputs) -> Tensor:
        return (-Fs.mahalanobis(outputs.features, self.means, self.precision)).amax(dim=1).float()


class RMDS(Scorer):
    """Relative Mahalanobis (Ren et al., 2021): class distances minus the distance under one
    background Gaussian fitted to all ID training features; max over classes of its negation."""

    name = "rmds"
    needs_train = True

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        c = int(train.labels.max()) + 1
        self.means, self.precision = Fs.class_gaussians(train.features, train.labels, c)
        zeros = torch.zeros_like(train.labels)
        self.bg_mean, self.bg_precision = Fs.class_gaussians(train.features, zeros, 1)

    def postprocess(self, outputs: Outputs) -> Tensor:
        md = Fs.mahalanobis(outputs.features, self.means, self.precision)
        md0 = Fs.mahalanobis(outputs.features, self.bg_mean, self.bg_precision)
        return (-(md - md0)).amax(dim=1).float()


class ViM(Scorer):
    """ViM (Wang et al., CVPR 2022): energy minus α·‖residual‖ of the feature outside the
    principal subspace of ID training features, origin u = −W⁺b; α matches the mean max-logit to
    the mean residual norm on training data. Computed on the linear layer's inputs."""

    name = "vim"
    needs_train = True
    defaults = {"dim": 0.5}
    grid = {"dim": [0.25, 0.5, 0.75]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        w, b = head.fc.weight.detach().double().cpu(), head.fc.bias.detach().double().cpu()
        self.feature_norm, self.sigma = str(head.feature_norm), float(head.sigma)
        self.u = -(torch.linalg.pinv(w) @ b)
        x = self._fc_inputs(train.features.double()) - self.u
        d = max(1, min(x.shape[1] - 1, int(round(self.p["dim"] * x.shape[1]))))
        cov = x.T @ x / x.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(cov)
        self.ns = eigvecs[:, eigvals.argsort(descending=True)[d:]]
        residual = (x @ self.ns).norm(dim=1)
        self.alpha = float(train.logits.double().amax(dim=1).mean() / residual.mean())

    def _fc_inputs(self, h: Tensor) -> Tensor:
        return normalize_features(h, self.feature_norm, self.sigma)

    def postprocess(self, outputs: Outputs) -> Tensor:
        x = self._fc_inputs(outputs.features.double()) - self.u
        vlogit = self.alpha * (x @ self.ns).norm(dim=1)
        return (Fs.energy_from(outputs.logits.double()) - vlogit).float()


def _top_fraction_mask(h: Tensor, percentile: float) -> Tensor:
    """Per sample, 1 on the activations kept above the p-th percentile (the top n − round(n·p/100))."""
    n = h.shape[1]
    k = max(1, n - int(round(n * percentile / 100.0)))
    idx = h.topk(k, dim=1).indices
    return torch.zeros_like(h).scatter_(1, idx, 1.0)


class ASH(_ModifiedFeatureScorer):
    """ASH (Djurisic et al., ICLR 2023) on the pooled features: keep each sample's activations
    above its p-th percentile, then `variant` "b" sets every kept one to Σ all / #kept (OpenOOD's
    choice, the default), "s" scales them by exp(Σ all / Σ kept), "p" only prunes; energy of the
    result. The paper prunes the last activation map before pooling; the released evaluation
    (OpenOOD's ASHNet) does it on the pooled feature, as here."""

    name = "ash"
    defaults = {"percentile": 90.0, "variant": "b", "feature_path": "fc"}
    grid = {"percentile": [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]}

    def postprocess(self, outputs: Outputs) -> Tensor:
        h = outputs.features.double()
        mask = _top_fraction_mask(h, self.p["percentile"])
        kept = h * mask
        total = h.sum(dim=1, keepdim=True)
        if self.p["variant"] == "b":
            kept = mask * total / mask.sum(dim=1, keepdim=True)
        elif self.p["variant"] == "s":
            kept = kept * torch.exp(total / kept.sum(dim=1, keepdim=True))
        elif self.p["variant"] != "p":
            raise ValueError(f"ash variant: expected b, s or p, got {self.p['variant']!r}")
        return Fs.energy_from(self.logits_of(kept)).float()


class SCALE(_ModifiedFeatureScorer):
    """SCALE (Xu et al., ICLR 2024): scale every activation by exp(Σ all / Σ above the p-th
    percentile), no pruning, then energy."""

    name = "scale"
    defaults = {"percentile": 85.0, "feature_path": "fc"}
    grid = {"percentile": [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]}

    def postprocess(self, outputs: Outputs) -> Tensor:
        h = outputs.features.double()
        top = (h * _top_fraction_mask(h, self.p["percentile"])).sum(dim=1, keepdim=True)
        scaled = h * torch.exp(h.sum(dim=1, keepdim=True) / top)
        return Fs.energy_from(self.logits_of(scaled)).float()


class NNGuide(Scorer):
    """NNGuide (Park et al., ICCV 2023): energy times a guidance term, the mean of the k largest
    similarities between the L2-normalized feature and the ID training bank, whose normalized
    features are each scaled by their own energy. The whole training set is the bank, as in the
    released code (OpenOOD keeps only the first ~1% of training batches); OpenOOD does not search
    k (100), the grid here is an option."""

    name = "nnguide"
    needs_train = True
    defaults = {"k": 100}
    grid = {"k": [10, 100, 1000]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        conf = Fs.energy_from(train.logits.double())
        self.bank = Fs.l2_normalize(train.features.double()) * conf[:, None]

    def postprocess(self, outputs: Outputs) -> Tensor:
        guidance = Fs.top_similarities(Fs.l2_normalize(outputs.features.double()), self.bank, self.p["k"]).mean(dim=1)
        return (Fs.energy_from(outputs.logits.double()) * guidance).float()


class Relation(Scorer):
    """Relation (Kim et al., NeurIPS 2023, neural relation graph): the summed relation to ID
    training samples, r_i = max(⟨z, z_i⟩, 0) · ⟨p, p_i⟩ with L2-normalized features z and
    softmax probabilities p; relations with |r| ≤ threshold are dropped and the rest raised to
    `power`."""

    name = "relation"
    needs_train = True
    defaults = {"power": 1, "threshold": 0.03}
    grid = {"power": [1, 2, 4, 6, 8]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        self.bank_z = Fs.l2_normalize(train.features.double())
        self.bank_p = train.logits.double().softmax(dim=1)

    def postprocess(self, outputs: Outputs) -> Tensor:
        z = Fs.l2_normalize(outputs.features.double())
        p = outputs.logits.double().softmax(dim=1)
        scores = []
        for s in Fs.row_chunks(z.shape[0], self.bank_z.shape[0], 256):  # bounded memory: a chunk of queries
            r = (z[s] @ self.bank_z.T).clamp(min=0) * (p[s] @ self.bank_p.T)
            r = torch.where(r.abs() > self.p["threshold"], r, torch.zeros_like(r))
            scores.append((r.sign() * r.abs().pow(self.p["power"])).sum(dim=1))
        return torch.cat(scores).float()
