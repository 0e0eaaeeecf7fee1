"""The ASCOOD method as pure tensor functions: no training loop, no I/O.

Everything here follows the authors' released code exactly (docs/method-notes.md); where the
paper's wording differs, the alternative is a parameter.
"""

from ascood.method.losses import ascood_loss, uniform_kl
from ascood.method.normalization import FEATURE_NORMS, normalize_features
from ascood.method.saliency import true_class_saliency
from ascood.method.schedule import alpha_at, cosine_lr_factor
from ascood.method.synthesis import (
    SYNTHESIS_KINDS,
    gaussian_outliers,
    gradient_outliers,
    num_kept_entries,
    shuffle_outliers,
    synthesize,
    topk_mask,
)

__all__ = [
    "FEATURE_NORMS",
    "SYNTHESIS_KINDS",
    "alpha_at",
    "ascood_loss",
    "cosine_lr_factor",
    "gaussian_outliers",
    "gradient_outliers",
    "normalize_features",
    "num_kept_entries",
    "shuffle_outliers",
    "synthesize",
    "topk_mask",
    "true_class_saliency",
    "uniform_kl",
]
