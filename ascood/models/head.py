"""The ASCOOD network: a backbone giving pooled features h, then normalize(h)·σ → linear."""

from __future__ import annotations

from torch import Tensor, nn

from ascood.choices import one_of
from ascood.method.normalization import FEATURE_NORMS, normalize_features


class NormalizedLinear(nn.Module):
    """logits = fc(norm(h)·σ); σ is a fixed hyperparameter, not learned."""

    def __init__(self, in_features: int, num_classes: int, feature_norm: str = "zscore", sigma: float = 0.5):
        super().__init__()
        self.feature_norm = one_of(feature_norm, FEATURE_NORMS, "feature_norm")
        self.sigma = float(sigma)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.fc(normalize_features(h, self.feature_norm, self.sigma))


class OODNet(nn.Module):
    """Backbone + normalized head. `forward_with_features` exposes the pre-normalization h."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, feature_norm: str, sigma: float):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = NormalizedLinear(feature_dim, num_classes, feature_norm, sigma)

    @property
    def fc(self) -> nn.Linear:
        return self.head.fc

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.backbone(x)
        return self.head(h), h
