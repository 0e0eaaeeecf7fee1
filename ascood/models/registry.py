"""Models by name, timm-style: `create_model(name, num_classes=…, feature_norm=…, sigma=…)`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ascood.choices import one_of
from ascood.models.head import OODNet
from ascood.models.pool import GlobalAvgPool
from ascood.models.resnet_cifar import ResNet18_32x32
from ascood.models.small_cnn import SmallCNN

_BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {}


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the model."""


def register_backbone(name: str):
    def wrap(fn: Callable[[], tuple[nn.Module, int]]):
        _BACKBONES[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_BACKBONES)


@register_backbone("small_cnn")
def _small_cnn() -> tuple[nn.Module, int]:
    return SmallCNN(), SmallCNN.feature_dim


@register_backbone("resnet18_32x32")
def _resnet18_32x32() -> tuple[nn.Module, int]:
    return ResNet18_32x32(), ResNet18_32x32.feature_dim


def _torchvision(arch: str) -> tuple[nn.Module, int]:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    net.avgpool = GlobalAvgPool()
    return net, dim


@register_backbone("resnet18")
def _resnet18() -> tuple[nn.Module, int]:
    return _torchvision("resnet18")


@register_backbone("resnet50")
def _resnet50() -> tuple[nn.Module, int]:
    return _torchvision("resnet50")


def create_model(
    name: str,
    *,
    num_classes: int,
    feature_norm: str = "zscore",
    sigma: float = 0.5,
    weights: str | Path | None = None,
    norm_at_eval: bool = True,
) -> OODNet:
    """Build a backbone + ASCOOD head; `weights` is a local torchvision-format backbone state dict."""
    backbone, dim = _BACKBONES[one_of(name, list_models(), "backbone")]()
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return OODNet(backbone, dim, num_classes, feature_norm, sigma, norm_at_eval)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a state dict (weights_only) into the backbone; the classifier (`fc.*`) is skipped.

    Every backbone tensor must be present with the right shape: a partial load would silently
    train from a half-random network.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"--weights: file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"--weights: {path} is not a readable PyTorch state dict ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"--weights: {path} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise WeightsError(
            f"--weights: {path} does not fit the backbone "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped keys; e.g. {first!r})"
        )
    backbone.load_state_dict(state)
