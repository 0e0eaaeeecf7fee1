"""Newer post-hoc scorers on the shared forward pass: fDBD, NCI, NECO, VRA, GradNorm, DICE, SHE,
KL matching and Mahalanobis++ (AdaSCALE, which needs the input, is in `ascood.scorers.adascale`).

Conventions follow `ascood.scorers.feature`: features are the pooled features h *before* the
head's normalization; state is fitted on the CPU from ID training outputs (OpenOOD fits VRA's
percentiles and KL matching's templates on ID validation data; the evaluator hands `setup` the
training outputs only, as for ReAct); the head is read through a `HeadCopy`, never kept.

Two feature spaces, as `feature_path`: "fc" feeds raw features straight to the final linear layer
(what the released evaluation does for scorers that reshape features or weights: VRA, DICE, as
ReAct/SCALE), "head" works where the trained layer lives, on its input norm(h)·σ with the head's
own logits (fDBD and NCI, whose geometry is that of the decision boundaries, as ViM). OpenOOD run
on the released network would mix the two (head logits with raw features) for fDBD/NCI/SHE, and
cannot run DICE or GradNorm there (no `get_fc`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ascood.method.normalization import normalize_features
from ascood.scorers import functional as Fs
from ascood.scorers import functional_newer as Fn
from ascood.scorers.base import Outputs, Scorer
from ascood.scorers.feature import HeadCopy

FEATURE_PATHS = ("fc", "head")


class _HeadSpaceScorer(Scorer):
    """A scorer reading the final linear layer: a float64 copy of it and the chosen feature space."""

    defaults: ClassVar[dict] = {"feature_path": "fc"}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        if self.p["feature_path"] not in FEATURE_PATHS:
            raise ValueError(f"{self.name} feature_path: expected fc or head, got {self.p['feature_path']!r}")
        self.head_copy = HeadCopy.of(head)
        self.weight = self.head_copy.weight.double()
        b = self.head_copy.bias
        self.bias = torch.zeros(self.weight.shape[0], dtype=torch.float64) if b is None else b.double()

    def fc_inputs(self, h: Tensor) -> Tensor:
        """What the final linear layer is fed in this space: h itself ("fc") or norm(h)·σ ("head")."""
        h = h.double()
        if self.p["feature_path"] == "fc":
            return h
        return normalize_features(h, self.head_copy.feature_norm, self.head_copy.sigma)

    def space_logits(self, outputs: Outputs) -> Tensor:
        """Logits in this space: fc(h) ("fc") or the head's own ("head")."""
        if self.p["feature_path"] == "fc":
            return F.linear(outputs.features.double(), self.weight, self.bias)
        return outputs.logits.double()

    def logits_of(self, h: Tensor) -> Tensor:
        """Logits of (modified) pooled features h in this space."""
        return F.linear(self.fc_inputs(h), self.weight, self.bias)


class FDBD(_HeadSpaceScorer):
    """fDBD (Liu & Qin, ICML 2024), as OpenOOD: Σ_c |z_ŷ − z_c| / ‖w_ŷ − w_c‖ (summed, not
    averaged, over classes: same ranking) over ‖x − μ‖ with μ the ID training mean
    (`distance_as_normalizer`, OpenOOD's default) or over ‖x‖; the grid tries both, as OpenOOD.
    Default `feature_path="head"`: x = norm(h)·σ with the head's logits, where the trained
    boundaries are (with z-scoring ‖x‖ is constant, so the False point is the bare distance sum)."""

    name = "fdbd"
    needs_train = True
    defaults = {"distance_as_normalizer": True, "feature_path": "head"}
    grid = {"distance_as_normalizer": [True, False]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        super().setup(train, head)
        self.denominators = Fn.boundary_denominators(self.weight)
        self.mean = self.fc_inputs(train.features).mean(dim=0)

    def postprocess(self, outputs: Outputs) -> Tensor:
        mean = self.mean if self.p["distance_as_normalizer"] else None
        return Fn.fdbd(self.space_logits(outputs), self.fc_inputs(outputs.features), self.denominators, mean).float()


class NCI(_HeadSpaceScorer):
    """NCI (Liu & Qin, CVPR 2025), as OpenOOD: ⟨w_ŷ, x − μ⟩ / ‖x − μ‖ + α·‖x‖₁, μ the ID training
    mean (w_ŷ not normalized, as released); grid α ∈ {1e-4, 1e-3, 1e-2, 0.1} (OpenOOD's). Default
    `feature_path="head"` (x = norm(h)·σ, the head's logits), as fDBD."""

    name = "nci"
    needs_train = True
    defaults = {"alpha": 0.0001, "feature_path": "head"}
    grid = {"alpha": [0.0001, 0.001, 0.01, 0.1]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        super().setup(train, head)
        self.mean = self.fc_inputs(train.features).mean(dim=0)

    def _terms(self, outputs: Outputs) -> tuple[Tensor, Tensor]:
        return Fn.nci_terms(self.space_logits(outputs), self.fc_inputs(outputs.features), self.weight, self.mean)

    def postprocess(self, outputs: Outputs) -> Tensor:
        proximity, l1 = self._terms(outputs)
        return (proximity + self.p["alpha"] * l1).float()

    def grid_scores(
        self, train: Outputs | None, head: nn.Module | None, sets: list[Outputs], points: list[dict]
    ) -> list[list[Tensor]]:
        """Both terms once per set; every α combines them."""
        scorers = [type(self)(**{**self.p, **pt}) for pt in points]
        if any(s.p["feature_path"] != self.p["feature_path"] for s in scorers):
            return super().grid_scores(train, head, sets, points)
        base = type(self)(**self.p)
        base.setup(train, head)
        terms = [base._terms(o) for o in sets]
        return [[(prox + s.p["alpha"] * l1).float() for prox, l1 in terms] for s in scorers]


class NECO(Scorer):
    """NECO (Ammar et al., ICLR 2024), as the authors' code: features standardized on ID
    training data (scikit-learn's StandardScaler), PCA of the standardized training features,
    score ‖first `dim` PCA coordinates‖ / ‖standardized feature‖; `maxlogit` multiplies by the
    max logit (the released code does so for every architecture but ResNets; ours are CNNs, so
    off by default). `dim` is capped at the feature size. The paper tunes d per model and
    publishes no grid; the grid here is ours."""

    name = "neco"
    needs_train = True
    defaults = {"dim": 10, "maxlogit": False}
    grid = {"dim": [1, 2, 5, 10, 20, 50, 100, 200]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        self.scaler_mean, self.scaler_std = Fn.standard_scaler(train.features)
        self.pca_mean, self.axes = Fn.principal_axes(self._scaled(train.features))

    def _scaled(self, h: Tensor) -> Tensor:
        return (h.double() - self.scaler_mean) / self.scaler_std

    def _projection(self, outputs: Outputs) -> tuple[Tensor, Tensor]:
        z = self._scaled(outputs.features)
        return (z - self.pca_mean) @ self.axes, z.norm(dim=1)

    def _score(self, projection: Tensor, norm: Tensor, outputs: Outputs, params: dict) -> Tensor:
        ratio = projection[:, : min(int(params["dim"]), projection.shape[1])].norm(dim=1) / norm
        if params["maxlogit"]:
            ratio = ratio * outputs.logits.double().amax(dim=1)
        return ratio.float()

    def postprocess(self, outputs: Outputs) -> Tensor:
        return self._score(*self._projection(outputs), outputs, self.p)

    def grid_scores(
        self, train: Outputs | None, head: nn.Module | None, sets: list[Outputs], points: list[dict]
    ) -> list[list[Tensor]]:
        """One scaler, one PCA and one projection per set serve every d."""
        params = [type(self)(**{**self.p, **pt}).p for pt in points]
        base = type(self)(**self.p)
        base.setup(train, head)
        projections = [base._projection(o) for o in sets]
        return [[base._score(proj, norm, o, p) for (proj, norm), o in zip(projections, sets, strict=True)] for p in params]


class VRA(_HeadSpaceScorer):
    """VRA (Xu et al., NeurIPS 2023), the VRA-P variant as OpenOOD's "vra": features clipped
    to [p_low-th, p_high-th] percentile of ID training activations (OpenOOD: ID validation),
    then energy; grid p_high ∈ {85, 90, 95, 99} × p_low ∈ {1, 5, 10, 15} (OpenOOD's).
    `feature_path="fc"` by default, as ReAct."""

    name = "vra"
    needs_train = True
    defaults = {"percentile_high": 90.0, "percentile_low": 10.0, "feature_path": "fc"}
    grid = {"percentile_high": [85.0, 90.0, 95.0, 99.0], "percentile_low": [1.0, 5.0, 10.0, 15.0]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        super().setup(train, head)
        self.low, self.high = self._thresholds(train, [self.p["percentile_low"], self.p["percentile_high"]])

    @staticmethod
    def _thresholds(train: Outputs, percentiles: list[float]) -> list[float]:
        return [float(t) for t in np.percentile(train.features.numpy().ravel(), percentiles)]

    def _score(self, outputs: Outputs, low: float, high: float) -> Tensor:
        return Fs.energy_from(self.logits_of(outputs.features.double().clamp(min=low, max=high))).float()

    def postprocess(self, outputs: Outputs) -> Tensor:
        return self._score(outputs, self.low, self.high)

    def grid_scores(
        self, train: Outputs | None, head: nn.Module | None, sets: list[Outputs], points: list[dict]
    ) -> list[list[Tensor]]:
        """Every percentile of the grid from one pass over the training activations."""
        scorers = [type(self)(**{**self.p, **pt}) for pt in points]
        if any(s.p["feature_path"] != self.p["feature_path"] for s in scorers):
            return super().grid_scores(train, head, sets, points)
        base = type(self)(**self.p)
        _HeadSpaceScorer.setup(base, train, head)
        wanted = sorted({v for s in scorers for v in (s.p["percentile_low"], s.p["percentile_high"])})
        at = dict(zip(wanted, self._thresholds(train, wanted), strict=True))
        return [[base._score(o, at[s.p["percentile_low"]], at[s.p["percentile_high"]]) for o in sets] for s in scorers]


class GradNorm(Scorer):
    """GradNorm (Huang et al., NeurIPS 2021): the L1 norm of the gradient of the final linear
    layer's weight for −Σ_c log softmax (all-ones targets, T = 1, as OpenOOD), in closed form
    (Σ_k |C·p_k − 1|)·‖x‖₁ with x = norm(h)·σ, that layer's input on our head, and p the head's
    softmax: no backward pass. Equals the paper's KL(U‖softmax) gradient norm times C."""

    name = "gradnorm"

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        self.head_copy = HeadCopy.of(head)

    def postprocess(self, outputs: Outputs) -> Tensor:
        hc = self.head_copy
        x = normalize_features(outputs.features.double(), hc.feature_norm, hc.sigma)
        return Fn.gradnorm(outputs.logits, x).float()


class DICE(_HeadSpaceScorer):
    """DICE (Sun & Li, ECCV 2022), as OpenOOD: keep the weights whose contribution
    mean_train(x)_d · W_cd is above the p-th percentile of all contributions, energy of the
    sparsified layer. Grid p ∈ {10, 30, 50, 70, 90} (the paper's sparsity range; OpenOOD fixes
    90, our default). `feature_path="fc"` by default (raw features, as the released fc)."""

    name = "dice"
    needs_train = True
    defaults = {"percentile": 90.0, "feature_path": "fc"}
    grid = {"percentile": [10.0, 30.0, 50.0, 70.0, 90.0]}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        super().setup(train, head)
        mean = self.fc_inputs(train.features).mean(dim=0)
        self.masked_weight = self.weight * Fn.dice_mask(mean, self.weight, self.p["percentile"])

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.energy_from(F.linear(self.fc_inputs(outputs.features), self.masked_weight, self.bias)).float()


class SHE(Scorer):
    """SHE (Zhang et al., ICLR 2023), as OpenOOD: similarity of the feature to the stored pattern
    of its predicted class, the mean ID training feature of that class's correctly predicted
    samples (`metric` inner_product, OpenOOD's default; euclidean or cosine). A class without
    correct predictions falls back on the mean of its samples (OpenOOD would give NaN)."""

    name = "she"
    needs_train = True
    defaults = {"metric": "inner_product"}

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        c = train.logits.shape[1]
        self.patterns = Fn.class_patterns(train.features, train.labels, train.logits.argmax(dim=1), c)

    def postprocess(self, outputs: Outputs) -> Tensor:
        h = outputs.features.double()
        target = self.patterns[outputs.logits.argmax(dim=1)]
        metric = self.p["metric"]
        if metric == "inner_product":
            return (h * target).sum(dim=1).float()
        if metric == "euclidean":
            return (-(h - target).norm(dim=1)).float()
        if metric == "cosine":
            return F.cosine_similarity(h, target, dim=1).float()
        raise ValueError(f"she metric: expected inner_product, euclidean or cosine, got {metric!r}")


class KLMatching(Scorer):
    """KL matching (Hendrycks et al., ICML 2022), as OpenOOD's "klm": minus the smallest
    KL(p ‖ d_k) over class templates d_k, the mean softmax of ID samples predicted k (ID training
    samples here; OpenOOD: ID validation), one-hot for a class nothing is predicted as."""

    name = "klm"
    needs_train = True

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        probs = train.logits.double().softmax(dim=1)
        self.templates = Fn.class_mean_probabilities(probs, train.logits.argmax(dim=1), probs.shape[1])

    def postprocess(self, outputs: Outputs) -> Tensor:
        kl = Fn.kl_divergences(outputs.logits.double().softmax(dim=1), self.templates)
        return (-kl.amin(dim=1)).float()


class MahalanobisPP(Scorer):
    """Mahalanobis++ (Mueller & Hein, ICML 2025): MDS (class means, one shared covariance, max
    over classes of minus the distance) on L2-normalized features, train and test alike."""

    name = "mdspp"
    needs_train = True

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        c = int(train.labels.max()) + 1
        self.means, self.precision = Fs.class_gaussians(Fs.l2_normalize(train.features.double()), train.labels, c)

    def postprocess(self, outputs: Outputs) -> Tensor:
        z = Fs.l2_normalize(outputs.features.double())
        return (-Fs.mahalanobis(z, self.means, self.precision)).amax(dim=1).float()
