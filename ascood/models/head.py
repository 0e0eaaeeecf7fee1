"""The ASCOOD network: a backbone giving pooled features h, then normalize(h)·σ → linear."""

from __future__ import annotations

from torch import Tensor, nn

from ascood.choices import one_of
from ascood.method.normalization import FEATURE_NORMS, normalize_features


class NormalizedLinear(nn.Module):
    """logits = fc(norm(h)·σ); σ is a fixed hyperparameter, not learned. With `norm_at_eval=False`
    (T2FNorm) the head normalizes in training only and is a plain fc(h) in eval mode."""

    def __init__(self, in_features: int, num_classes: int, feature_norm: str = "zscore", sigma: float = 0.5,
                 norm_at_eval: bool = True):
        super().__init__()
        self.train_feature_norm = one_of(feature_norm, FEATURE_NORMS, "feature_norm")
        self.sigma = float(sigma)
        self.norm_at_eval = norm_at_eval
        self.fc = nn.Linear(in_features, num_classes)

    @property
    def feature_norm(self) -> str:
        """The normalization in the head's current mode (what a scorer copying the head must apply)."""
        return self.train_feature_norm if self.training or self.norm_at_eval else "none"

    def forward(self, h: Tensor) -> Tensor:
        return self.fc(normalize_features(h, self.feature_norm, self.sigma))


class OODNet(nn.Module):
    """Backbone + normalized head. `forward_with_features` exposes the pre-normalization h."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, feature_norm: str, sigma: float,
                 norm_at_eval: bool = True):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = NormalizedLinear(feature_dim, num_classes, feature_norm, sigma, norm_at_eval)

    @property
    def fc(self) -> nn.Linear:
        return self.head.fc

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.backbone(x)
        return self.head(h), h
