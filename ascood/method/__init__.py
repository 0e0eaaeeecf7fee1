"""The ASCOOD method as pure tensor functions: no training loop, no I/O.

Everything here follows the authors' released code exactly (docs/method-notes.md); where the
paper's wording differs, the alternative is a parameter.
"""

import importlib

from ascood.method.kinds import FEATURE_NORMS, SYNTHESIS_KINDS

# The tensor functions load on first use (PEP 562): `ascood.method.registry` and the names above
# are imported by every config check, which must not pay for torch.
_LAZY = {
    "ascood_loss": "losses", "uniform_kl": "losses", "normalize_features": "normalization",
    "true_class_saliency": "saliency", "alpha_at": "schedule", "cosine_lr_factor": "schedule",
    **dict.fromkeys(("gaussian_outliers", "gradient_outliers", "num_kept_entries", "shuffle_outliers", "synthesize",
                     "topk_mask"), "synthesis"),
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"ascood.method.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ascood.method' has no attribute {name!r}")


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
