"""Backbones by name and the ASCOOD normalized head."""

from ascood.models.head import NormalizedLinear, OODNet
from ascood.models.registry import WeightsError, create_model, list_models, load_backbone_weights

__all__ = ["NormalizedLinear", "OODNet", "WeightsError", "create_model", "list_models", "load_backbone_weights"]
