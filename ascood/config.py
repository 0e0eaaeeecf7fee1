"""Typed, validated configuration of one training run (validated once, at the edge)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ascood.choices import one_of, printable
from ascood.domains import DOMAINS, Float, Int, Seed, check_value
from ascood.method.kinds import FEATURE_NORMS, SYNTHESIS_KINDS
from ascood.metrics import FPR_CONVENTIONS
from ascood.scorer_names import SCORER_NAMES

DEFAULT_SCORERS = ("msp", "maxlogit", "energy", "odin", "iodin")


class TrainConfig(BaseModel):
    """Every hyperparameter of one ASCOOD (or plain cross-entropy) run.

    Defaults are the released code's where they exist (SGD + Nesterov, wd 5e-4, σ = 0.5, z-score,
    gradient synthesis with p_inv = 0.1, eval-mode saliency), sized for the embedded benchmarks.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    benchmark: str = "mnist10"
    method: str = "ascood"  # one of ascood.method.registry.METHODS
    backbone: str = "small_cnn"
    weights: Path | None = None
    epochs: Int = Field(10, ge=1)
    batch_size: Int = Field(128, ge=1)
    eval_batch_size: Int = Field(512, ge=1)
    lr: Float = 0.05
    momentum: Float = 0.9
    weight_decay: Float = 5e-4
    nesterov: bool = True
    fc_lr_factor: Float = 1.0
    alpha_max: Float = 1.0
    alpha_min: Float = 1.0
    alpha_scale: Literal["absolute", "relative"] = "absolute"  # relative: α is the perturbation's size ÷ the input's
    p_inv: Float = 0.1
    lam: Float = Field(1.0, alias="lambda")  # the paper's λ; users write `lambda`, code and results say `lam`
    sigma: Float = 0.5
    ood_type: str = "gradient"
    feature_norm: str | None = None
    saliency_mode: Literal["eval", "train"] = "eval"
    seed: Seed = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    channels_last: bool = True
    eval_every: Int = Field(1, ge=1)
    scorers: tuple[str, ...] = DEFAULT_SCORERS
    scorer_search: bool = False
    odin_temperature: Float = 1000.0
    odin_epsilon: Float = 0.0014
    iodin_k: Int = Field(1, ge=1)
    fpr_convention: str = "openood"
    num_workers: Int = Field(0, ge=0)
    deterministic: bool = False  # deterministic GPU kernels (slower): a rerun or resume on a GPU is then bit-exact
    logitnorm_tau: Float | None = Field(None, gt=0)  # method logitnorm's temperature τ (None: the paper's 0.04)
    t2fnorm_tau: Float | None = Field(None, gt=0)  # method t2fnorm's temperature τ (None: the paper's 0.1)
    # method vos (None: the authors' defaults, ascood.method.registry): per-class queue length, draws per
    # class and step, lowest-likelihood draws kept per class, weight of the uncertainty loss, and the
    # fraction of the run after which that loss starts (0.4: the authors' epoch 40 of 100)
    vos_sample_number: Int | None = Field(None, ge=1)
    vos_sample_from: Int | None = Field(None, ge=1)
    vos_select: Int | None = Field(None, ge=1)
    vos_loss_weight: Float | None = Field(None, ge=0)
    vos_start: Float | None = Field(None, ge=0, le=1)
    # external outliers of methods oe and mixoe: `embedded` (the embedded outlier set), an image folder,
    # a class-folder tree, or an OpenOOD image list (.txt, its paths relative to `outliers_root`, default
    # the list's folder)
    outliers: str | None = None
    outliers_root: Path | None = None
    oe_lambda: Float | None = Field(None, ge=0)  # method oe's outlier-loss weight (None: the paper's 0.5)
    oe_batch_factor: Int | None = Field(None, ge=1)  # outliers per step ÷ ID batch size (None: the paper's 2)
    mixoe_op: Literal["mixup", "cutmix"] | None = None  # method mixoe's mixing (None: cutmix)
    mixoe_alpha: Float | None = Field(None, gt=0)  # mixing ratio ~ Beta(α, α) (None: the authors' 2.0)
    mixoe_beta: Float | None = Field(None, ge=0)  # weight of the mixed loss (None: the authors' 5.0)

    @field_validator(*DOMAINS)
    @classmethod
    def _in_domain(cls, v: float, info) -> float:
        return check_value(info.field_name, v)

    @field_validator("ood_type")
    @classmethod
    def _ood_type(cls, v: str) -> str:
        return one_of(v, SYNTHESIS_KINDS)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        from ascood.method.registry import METHODS

        return one_of(v, METHODS)

    @model_validator(mode="after")
    def _options_of_the_method(self) -> TrainConfig:
        from ascood.method.registry import METHODS, OUTLIER_METHODS, method_options, option_owner

        for name in method_options():
            owner = option_owner(name)
            if getattr(self, name) is not None and owner != self.method:
                raise ValueError(f"--{name.replace('_', '-')}: an option of method {owner}, not of method {self.method}")
        uses_outliers = METHODS[self.method].external_outliers
        if uses_outliers and self.outliers is None:
            raise ValueError(f"--outliers: method {self.method} trains on external outliers; give `embedded`, an image "
                             "folder, a class-folder tree or an OpenOOD image list")
        if not uses_outliers and (self.outliers is not None or self.outliers_root is not None):
            flag = "--outliers" if self.outliers is not None else "--outliers-root"
            raise ValueError(f"{flag}: only methods {' and '.join(OUTLIER_METHODS)} train on external outliers, "
                             f"not method {self.method}")
        if self.outliers_root is not None and not str(self.outliers).endswith(".txt"):
            raise ValueError("--outliers-root: the image root of an OpenOOD image list; --outliers is not a .txt list")
        if self.method == "vos" and self.method_option("vos_select") > self.method_option("vos_sample_from"):
            raise ValueError(f"--vos-select ({self.method_option('vos_select')}) must not exceed "
                             f"--vos-sample-from ({self.method_option('vos_sample_from')})")
        return self

    def method_option(self, name: str) -> float | str:
        """A method option's value: the run's, else the paper's default."""
        from ascood.method.registry import METHODS

        value = getattr(self, name)
        return METHODS[self.method].options[name] if value is None else value

    @field_validator("feature_norm")
    @classmethod
    def _feature_norm(cls, v: str | None) -> str | None:
        return None if v is None else one_of(v, FEATURE_NORMS)

    @field_validator("fpr_convention")
    @classmethod
    def _fpr_convention(cls, v: str) -> str:
        return one_of(v, FPR_CONVENTIONS)

    @field_validator("scorers", mode="before")
    @classmethod
    def _scorers(cls, v):
        if not isinstance(v, str | list | tuple):
            raise ValueError(f"expected scorer names (a list, or a comma-separated string), got {type(v).__name__}")
        items = tuple(s.strip() for s in v.split(",")) if isinstance(v, str) else tuple(v)
        bad = [printable(s) if isinstance(s, str) else repr(s) for s in items if not isinstance(s, str) or s not in SCORER_NAMES]
        if bad or not items:
            raise ValueError(f"expected a non-empty subset of {', '.join(SCORER_NAMES)}, got {', '.join(bad) or 'none'}")
        return items

    @field_validator("benchmark")
    @classmethod
    def _benchmark(cls, v: str) -> str:
        from ascood.data import get_spec

        get_spec(v)  # raises with the list of known names
        return v

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, v: str) -> str:
        from ascood.models.registry import list_models

        return one_of(v, list_models())

    @model_validator(mode="after")
    def _relative_needs_a_size(self) -> TrainConfig:
        if self.alpha_scale == "relative" and self.ood_type == "shuffle":
            raise ValueError("--alpha-scale relative: ood_type shuffle has no α to scale (use gradient, "
                             "gradient-subtract or gaussian)")
        return self

    @model_validator(mode="after")
    def _alpha_order(self) -> TrainConfig:
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"--alpha-min ({self.alpha_min}) must not exceed --alpha-max ({self.alpha_max})")
        return self

    def scorer_overrides(self) -> dict[str, dict]:
        """Parameters the run's flags set for particular scorers (the search may replace them)."""
        odin = {"temperature": self.odin_temperature, "epsilon": self.odin_epsilon}
        return {"odin": odin, "iodin": {**odin, "k": self.iodin_k}}

    @staticmethod
    def fc_classes(state: dict) -> int:
        """Number of classes of a checkpoint's final layer."""
        return int(state["model"]["head.fc.weight"].shape[0])

    @property
    def resolved_feature_norm(self) -> str:
        """The method's head normalization (z-score for ASCOOD, none for CE, …) unless set explicitly."""
        from ascood.method.registry import METHODS

        return self.feature_norm if self.feature_norm is not None else METHODS[self.method].feature_norm

    def head_options(self) -> dict:
        """What `create_model` needs to build this run's head: T2FNorm's scale is 1/τ, in training only."""
        from ascood.method.registry import METHODS

        sigma = 1.0 / self.method_option("t2fnorm_tau") if self.method == "t2fnorm" else self.sigma
        return {"feature_norm": self.resolved_feature_norm, "sigma": sigma,
                "norm_at_eval": METHODS[self.method].norm_at_eval}


# Fields added after runs were first recorded: at these values they leave the identity out, so a
# run's id (and checkpoint) from before they existed stays the same.
LATER_FIELDS = {"alpha_scale": "absolute", "deterministic": False, "logitnorm_tau": None, "t2fnorm_tau": None,
                "vos_sample_number": None, "vos_sample_from": None, "vos_select": None, "vos_loss_weight": None,
                "vos_start": None, "outliers": None, "outliers_root": None, "oe_lambda": None, "oe_batch_factor": None,
                "mixoe_op": None, "mixoe_alpha": None, "mixoe_beta": None}


def config_json(cfg: TrainConfig) -> str:
    """The run's identity as text: every field of its validated config (the run id hashes it)."""
    unset = {k for k, v in LATER_FIELDS.items() if getattr(cfg, k) == v}
    return cfg.model_dump_json(exclude=unset)


def field_name(key: str) -> str:
    """A key as a user writes it (`lambda`, `p-inv`) → the TrainConfig field it sets."""
    key = key.replace("-", "_")
    return _BY_ALIAS.get(key, key)


def flag_name(key: str) -> str:
    """The command-line flag of a field or alias, for errors that name what the user typed."""
    field = TrainConfig.model_fields.get(field_name(key))
    return "--" + ((field.alias if field and field.alias else None) or field_name(key)).replace("_", "-")


_BY_ALIAS = {f.alias: name for name, f in TrainConfig.model_fields.items() if f.alias}


class ConfigError(ValueError):
    """Invalid user configuration; the message is one line naming the option."""


def validate_config(values: dict, source: str | None = None) -> TrainConfig:
    """Build a TrainConfig, turning pydantic's report into one line naming the first bad option."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        where = printable(flag_name(loc[0])) if loc else "config"
        if source:
            where = f"{source}: {printable(loc[0]) if loc else 'config'}"
        if not loc and msg.startswith("--"):
            raise ConfigError(msg) from None
        raise ConfigError(f"{where}: {msg}") from None
    except KeyError as exc:  # unknown benchmark raised from the registry lookup
        raise ConfigError(f"--benchmark: {exc}") from None
