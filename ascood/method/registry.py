"""Training methods by name, as the scorers have theirs: what each one's head does and its options.

The math of each method is a pure function (`ascood.method.losses`, `…synthesis`); the training
loop (`ascood.train`) picks the step by name. A method's options are fields of the run's config
named `<method>_<option>`; one given to another method is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    feature_norm: str  # the head's normalization unless the run sets `feature_norm`
    norm_at_eval: bool = True  # False: the head normalizes in training only (T2FNorm)
    options: dict[str, float | str] = field(default_factory=dict)  # config field → the paper's default
    external_outliers: bool = False  # trains on the run's `outliers` (OE, MixOE)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ascood", "ASCOOD (the method): CE + λ·KL(U‖p) on outliers synthesized from the training images", "zscore"),
    Method("ce", "plain cross-entropy (the baseline)", "none"),
    Method("logitnorm", "LogitNorm (Wei et al., ICML 2022): CE on logits / (τ‖logits‖)", "none",
           options={"logitnorm_tau": 0.04}),
    Method("t2fnorm", "T2FNorm (Regmi et al., CVPR-W 2024): L2-normalized features / τ in training, raw at inference",
           "l2", norm_at_eval=False, options={"t2fnorm_tau": 0.1}),
    Method("vos", "VOS (Du et al., ICLR 2022): CE + w·uncertainty loss on virtual outliers sampled from "
           "class-conditional Gaussians of the penultimate features", "none",
           # the authors' CIFAR defaults; the start is a fraction of the run (their epoch 40 of 100)
           options={"vos_sample_number": 1000, "vos_sample_from": 10000, "vos_select": 1, "vos_loss_weight": 0.1,
                    "vos_start": 0.4}),
    Method("oe", "Outlier Exposure (Hendrycks et al., ICLR 2019): CE + λ·KL(U‖p) on a batch of external outliers",
           "none", options={"oe_lambda": 0.5, "oe_batch_factor": 2}, external_outliers=True),
    Method("mixoe", "MixOE (Zhang et al., WACV 2023): CE + β·soft CE on ID images mixed with external outliers, "
           "targets mixed between the label and uniform", "none",
           # the authors' cutmix setting (scripts/train.sh: α 2, β 5; with mixup they use α 1)
           options={"mixoe_op": "cutmix", "mixoe_alpha": 2.0, "mixoe_beta": 5.0}, external_outliers=True),
)}

OUTLIER_METHODS = tuple(m.name for m in METHODS.values() if m.external_outliers)


def method_options() -> tuple[str, ...]:
    """Every method's option fields."""
    return tuple(o for m in METHODS.values() for o in m.options)


def option_owner(option: str) -> str | None:
    """The method an option field belongs to (None: no method's)."""
    return next((m.name for m in METHODS.values() if option in m.options), None)
