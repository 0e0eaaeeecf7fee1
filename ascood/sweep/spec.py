"""The sweep file: a strict typed model (unknown keys rejected), validated once at the edge."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ascood import storage
from ascood.choices import one_of, printable
from ascood.config import ConfigError, TrainConfig, field_name, validate_config
from ascood.domains import SPACE_DOMAINS, Float, Int, Seed, check_value
from ascood.gain import BEST_VALUE, MINIMIZED
from ascood.method.kinds import SYNTHESIS_KINDS
from ascood.method.registry import METHODS, method_options, option_owner
from ascood.scorer_names import SCORER_NAMES
from ascood.tracking import Tracking, TrackingOptions
from ascood.yamlfile import YamlFileError, read_mapping, read_text

OBJECTIVE_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "id_accuracy")

# ASCOOD's parameters, then every training method's own options (searched when the trials train it)
SEARCHABLE = ("alpha", "alpha_min_ratio", "p_inv", "lam", "sigma", "ood_type", "lr", *method_options())


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(Strict):
    """One searched hyperparameter: a float range (optionally log), a list of choices, or a grid."""

    low: Float | None = None
    high: Float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected low and high (or choices)")
        if not self.low < self.high:
            raise ValueError(f"expected low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range needs low > 0, got {self.low}")
        return self


class Space(Strict):
    """What Optuna searches. `alpha` sets a constant α (α_max = α_min) unless `alpha_min_ratio`
    is searched too, in which case α_max = alpha and α_min = alpha · ratio."""

    alpha: Dimension | None = None
    alpha_min_ratio: Dimension | None = None
    p_inv: Dimension | None = None
    lam: Dimension | None = Field(None, alias=TrainConfig.model_fields["lam"].alias)
    sigma: Dimension | None = None
    ood_type: Dimension | None = None
    lr: Dimension | None = None
    # the baseline methods' options (ascood.method.registry), searched when the trials train that method
    logitnorm_tau: Dimension | None = None
    t2fnorm_tau: Dimension | None = None
    vos_sample_number: Dimension | None = None
    vos_sample_from: Dimension | None = None
    vos_select: Dimension | None = None
    vos_loss_weight: Dimension | None = None
    vos_start: Dimension | None = None
    oe_lambda: Dimension | None = None
    oe_batch_factor: Dimension | None = None
    mixoe_op: Dimension | None = None
    mixoe_alpha: Dimension | None = None
    mixoe_beta: Dimension | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator(*SEARCHABLE)
    @classmethod
    def _in_domain(cls, dim: Dimension | None, info) -> Dimension | None:
        """Every value the dimension can take lies in its parameter's domain."""
        if dim is None:
            return dim
        name = info.field_name
        if option_owner(name) is not None:
            return _option_dimension(name, dim)
        if name == "ood_type":
            if dim.choices is None:
                raise ValueError("ood_type is searched over choices")
            for c in dim.choices:
                one_of(c, SYNTHESIS_KINDS)
            return dim
        values = dim.choices if dim.choices is not None else {"low": dim.low, "high": dim.high}
        items = values.items() if isinstance(values, dict) else ((f"choice {v!r}", v) for v in values)
        for where, v in items:
            try:
                check_value(name, v, SPACE_DOMAINS)
            except ValueError as exc:
                raise ValueError(f"{where} leaves the domain of {name}: {exc}") from None
        return dim

    def dimensions(self) -> dict[str, Dimension]:
        return {k: v for k in SEARCHABLE if (v := getattr(self, k)) is not None}


def integer_dimension(name: str) -> bool:
    """Whether a searched method option takes integers (queue lengths, batch factors)."""
    return option_owner(name) is not None and isinstance(METHODS[option_owner(name)].options[name], int)


def _option_dimension(name: str, dim: Dimension) -> Dimension:
    """Every value a method option's dimension can take is one its method accepts (checked by the
    run config itself, with the words of a bad flag)."""
    owner = option_owner(name)
    values = dim.choices if dim.choices is not None else [dim.low, dim.high]
    if dim.choices is None and integer_dimension(name) and not (float(dim.low).is_integer() and float(dim.high).is_integer()):
        raise ValueError(f"{name} takes integers: expected integral low and high, got {dim.low:g}, {dim.high:g}")
    outliers = {"outliers": "embedded"} if METHODS[owner].external_outliers else {}
    for v in values:
        v = int(v) if integer_dimension(name) and isinstance(v, float) and v.is_integer() else v
        try:
            validate_config({"method": owner, name: v, **outliers})
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return dim


class Algorithm(Strict):
    """Optuna's sampler. `startup_trials`: random trials before TPE or the Gaussian process (`gp`)
    model the results (Optuna's own default is 10, most of a 12-trial search)."""

    name: Literal["tpe", "gp", "random", "grid"] = "tpe"
    seed: Seed = 0
    multi_objective: bool = False
    startup_trials: int = Field(default=10, ge=1)


class Objective(Strict):
    """A validation metric of one scorer, averaged over the validation OOD sets (or a group)."""

    metric: str = "val/auroc"
    scorer: str = "energy"
    ood: str = "all"

    @field_validator("metric")
    @classmethod
    def _val_only(cls, v: str) -> str:
        split, _, name = v.partition("/")
        if split != "val":
            raise ValueError(f"only validation metrics may be objectives (val/<metric>), got {v!r}")
        if name not in OBJECTIVE_METRICS:
            raise ValueError(f"expected val/ followed by one of {', '.join(OBJECTIVE_METRICS)}, got {v!r}")
        return v

    @field_validator("scorer")
    @classmethod
    def _scorer(cls, v: str) -> str:
        return one_of(v, SCORER_NAMES)

    @property
    def name(self) -> str:
        return self.metric.split("/", 1)[1]

    @property
    def mode(self) -> str:
        return "min" if self.name in MINIMIZED else "max"


class Scheduler(Strict):
    name: Literal["asha"] = "asha"
    grace_period: Int = Field(1, ge=1)
    reduction_factor: Float = Field(2.0, gt=1)


class Resources(Strict):
    """Per trial: `processes_per_trial` Ray Train workers (one process per GPU, Accelerate inside
    each) or one plain Tune process; a fraction of a GPU lets small single-process trials share one."""

    processes_per_trial: Int = Field(1, ge=1)
    cpus_per_process: Float = Field(1.0, gt=0)
    gpus_per_process: Float = Field(0.0, ge=0)
    max_concurrent_trials: Int = Field(2, ge=1)
    max_failures: Int = Field(2, ge=0)

    @model_validator(mode="after")
    def _gpus(self) -> Resources:
        """One process drives one GPU (Accelerate places it on its local rank's device): a second GPU
        per process would sit idle, or, under DDP, clash with the GPU Ray gave another worker."""
        g, n = self.gpus_per_process, self.processes_per_trial
        if n > 1 and g not in (0, 1):
            raise ValueError(f"gpus_per_process: a trial of {n} processes needs exactly 1 GPU per process "
                             f"(or 0 for CPU DDP), got {g:g}; two NCCL ranks cannot share a GPU, and a process "
                             "uses only one")
        if g > 1:
            raise ValueError(f"gpus_per_process: at most 1 (a process uses one GPU), got {g:g}; "
                             "for more GPUs per trial raise processes_per_trial")
        return self


def _distinct(v: list[int]) -> list[int]:
    if len(set(v)) != len(v):
        raise ValueError("seeds must be distinct")
    return v


Seeds = Annotated[list[Seed], Field(min_length=1), AfterValidator(_distinct)]


class Final(Strict):
    seeds: Seeds = [0, 1, 2]


class Transfer(Strict):
    """Every candidate setting measured on every dataset, for the cross-setting analysis:
    the top-k settings of each dataset's search, plus the sweep's default setting and the plain
    cross-entropy baseline when asked."""

    top_k: Int = Field(2, ge=1)
    seeds: Seeds = [0, 1, 2]
    defaults: bool = True
    baseline: bool = True
    # Racing: while candidates are tied with the leader, one more seed for the leader, the tied and
    # CE only, until they separate or this many seeds are measured.
    max_seeds: Int | None = None

    @model_validator(mode="after")
    def _race(self) -> Transfer:
        if self.max_seeds is not None and self.max_seeds < len(self.seeds):
            raise ValueError(f"max_seeds: expected at least the {len(self.seeds)} seeds of transfer.seeds, "
                             f"got {self.max_seeds}")
        return self


class Robust(Strict):
    """The cross-dataset search: one Optuna study for the whole sweep, each trial one setting trained
    on every dataset with `seed`; its objective is the worst case over datasets of the normalized
    gain over plain CE (trained once per dataset with `seed` before the stage). `trial` overrides
    every dataset's trial options for this stage (e.g. `alpha_scale: relative`); `space` replaces
    the sweep's; `top_k` of its settings become candidates of the transfer stage."""

    num_samples: Int = Field(16, ge=1)
    seed: Seed = 0
    top_k: Int = Field(1, ge=1)
    trial: dict[str, Any] = Field(default_factory=dict)
    space: Space | None = None
    gain_floor: Float = Field(1.0, gt=0, le=100)  # metric points: the smallest headroom a gain is divided by


class Baseline(Strict):
    """A training method compared with ASCOOD on every dataset, with the final stage's seeds; its
    options are fixed (a method's own, e.g. `oe_lambda`, or any trial option)."""

    method: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        one_of(v, METHODS)
        if v == "ascood":
            raise ValueError("ascood is what the sweep searches; a baseline is another method")
        return v

    @property
    def label(self) -> str:
        if not self.options:
            return self.method
        return f"{self.method} (" + ", ".join(f"{k}={v}" for k, v in sorted(self.options.items())) + ")"


def _baseline_entries(v: Any) -> Any:
    """`ce` or `{oe: {oe_lambda: 1.0}}` → {method, options}."""
    if not isinstance(v, list):
        return v
    out = []
    for item in v:
        if isinstance(item, dict) and len(item) == 1 and "method" not in item:
            (name, options), = item.items()
            out.append({"method": name, "options": options if options is not None else {}})
        elif isinstance(item, str):
            out.append({"method": item})
        else:
            out.append(item)
    return out


class DatasetSpec(Strict):
    benchmark: str
    setting: Literal["spurious", "fine-grained", "conventional"] | None = None
    num_samples: Int | None = Field(None, ge=1)
    trial: dict[str, Any] = Field(default_factory=dict)
    space: Space | None = None


NAME_MAX = 100  # a sweep's name names its studies, experiments and runs: short enough for every tool


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=NAME_MAX)
    output: str
    data_root: str | None = None
    datasets: list[DatasetSpec] = Field(min_length=1)
    trial: dict[str, Any] = Field(default_factory=dict)
    space: Space
    algorithm: Algorithm = Algorithm()
    num_samples: Int = Field(8, ge=1)
    scheduler: Scheduler | None = None
    objective: Objective = Objective()
    resources: Resources = Resources()
    final: Final | None = Final()
    transfer: Transfer | None = None
    robust: Robust | None = None
    baselines: Annotated[list[Baseline], BeforeValidator(_baseline_entries)] = Field(default_factory=list)
    outliers: str | None = None  # the external outliers of the oe and mixoe baselines (`embedded`, a folder, a list)
    outliers_root: str | None = None  # the image root of an OpenOOD image list given as `outliers`
    tracking: Tracking = TrackingOptions()  # which trackers get every trial's curves (not part of any run's identity)

    @model_validator(mode="after")
    def _unique(self) -> SweepSpec:
        labels = [b.label for b in self.baselines]
        if len(set(labels)) != len(labels):
            raise ValueError("baselines: each method (with its options) may appear once")
        if self.baselines and self.final is None:
            raise ValueError("baselines: they are compared with the final stage's runs, seed by seed; give final: {seeds: [...]}")
        if self.tracking.mlflow is not None and self.tracking.mlflow.uri is None and storage.is_uri(self.output):
            raise ValueError("tracking.mlflow.uri: the output is object storage, where no local MLflow store can be; "
                             "name a tracking server (uri: http://…)")
        names = [d.benchmark for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("each benchmark may appear once in datasets")
        if self.algorithm.multi_objective and self.scheduler is not None:
            raise ValueError("algorithm.multi_objective cannot be combined with a scheduler (Optuna cannot prune it)")
        if self.robust is not None:
            if len(self.datasets) < 2:
                raise ValueError("robust: a cross-dataset search needs at least two datasets, the sweep has one")
            if self.algorithm.multi_objective:
                raise ValueError("robust: the normalized gain is one number per dataset; it cannot be searched "
                                 "with algorithm.multi_objective")
            if self.objective.name not in BEST_VALUE:
                raise ValueError(f"robust: objective {self.objective.metric} has no known best value to normalize by")
        return self


class SweepFileError(ValueError):
    """A bad sweep file; the message is one line naming the file and the field."""


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{printable(part)}" if out else printable(part))
    return out


def load_sweep(path: str | Path) -> tuple[SweepSpec, str]:
    """Parse and validate a sweep file; returns the spec and the file's content hash."""
    path = Path(path)
    try:
        text = read_text(path, what="sweep file")
        raw = read_mapping(path, what="sweep file")
    except YamlFileError as exc:
        raise SweepFileError(str(exc)) from None
    bad = _non_text_key(raw)
    if bad is not None:
        where, key = bad
        raise SweepFileError(f"{path}: {where or 'top level'}: key {printable(repr(key))}: expected a field name "
                             f"(text), got {type(key).__name__}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        raise SweepFileError(f"{path}: {_loc(err['loc']) or 'top level'}: {msg}") from None
    for i, d in enumerate(spec.datasets):
        try:
            cfg = trial_config(spec, d)
        except ConfigError as exc:
            raise SweepFileError(f"{path}: datasets[{i}] ({printable(d.benchmark)}): {str(exc).lstrip('-')}") from None
        from ascood.data import get_spec

        setting = get_spec(cfg.benchmark).setting
        if d.setting is not None and d.setting != setting:
            raise SweepFileError(f"{path}: datasets[{i}].setting: {d.benchmark} is {setting}, not {d.setting}")
        if spec.objective.scorer not in cfg.scorers:
            raise SweepFileError(f"{path}: objective.scorer: {spec.objective.scorer} is not among the trial scorers")
        if spec.algorithm.name == "grid":
            for name, dim in space_for(spec, d).dimensions().items():
                if dim.choices is None:
                    raise SweepFileError(f"{path}: space.{name}: the grid algorithm needs choices for every dimension")
        kinds = space_for(spec, d).ood_type
        if cfg.alpha_scale == "relative" and kinds is not None and "shuffle" in kinds.choices:
            raise SweepFileError(f"{path}: space.ood_type: shuffle has no α, so it cannot be searched with a relative "
                                 f"alpha_scale ({d.benchmark})")
        for name in space_for(spec, d).dimensions():
            owner = option_owner(name)
            if owner is not None and owner != cfg.method:
                raise SweepFileError(f"{path}: space.{name}: an option of method {owner}, and the trials on "
                                     f"{printable(d.benchmark)} train method {cfg.method} (set trial.method)")
    if spec.robust is not None:
        _check_robust(path, spec)
    _check_baselines(path, spec)
    return spec, hashlib.sha256(text.encode()).hexdigest()


def _check_robust(path: Path, spec: SweepSpec) -> None:
    """Every dataset's joint-trial config is valid, and a relative α is not searched with shuffle."""
    if spec.algorithm.name == "grid":
        raise SweepFileError(f"{path}: robust: the grid algorithm is for per-dataset searches; use tpe or random")
    options = [n for n in robust_space(spec).dimensions() if option_owner(n) is not None]
    if options:
        raise SweepFileError(f"{path}: robust.space.{options[0]}: an option of method {option_owner(options[0])}; "
                             "the robust stage searches ASCOOD's settings")
    for d in spec.datasets:
        try:
            cfg = robust_config(spec, d)
        except ConfigError as exc:
            raise SweepFileError(f"{path}: robust.trial ({printable(d.benchmark)}): {str(exc).lstrip('-')}") from None
        kinds = robust_space(spec).ood_type
        if cfg.alpha_scale == "relative" and kinds is not None and "shuffle" in kinds.choices:
            raise SweepFileError(f"{path}: robust.space.ood_type: shuffle has no α, so it cannot be searched with a "
                                 "relative alpha_scale")
        if cfg.method != "ascood":
            raise SweepFileError(f"{path}: robust.trial.method: the robust stage searches ASCOOD's settings, got "
                                 f"{cfg.method}")


def _check_baselines(path: Path, spec: SweepSpec) -> None:
    """Every baseline's config is valid on every dataset; `outliers` is for the oe/mixoe baselines."""
    wants = [b for b in spec.baselines if METHODS[b.method].external_outliers]
    if spec.outliers is not None and not wants:
        raise SweepFileError(f"{path}: outliers: only the oe and mixoe baselines train on external outliers, and "
                             "baselines names neither")
    if spec.outliers_root is not None and spec.outliers is None:
        raise SweepFileError(f"{path}: outliers_root: the image root of `outliers`, which is not given")
    for i, b in enumerate(spec.baselines):
        for d in spec.datasets:
            try:
                baseline_config(spec, d, b, seed=0)
            except ConfigError as exc:
                msg = str(exc).lstrip("-")
                if msg.startswith("outliers: method"):
                    msg = f"outliers: baseline {b.method} trains on external outliers; give the sweep's outliers:"
                raise SweepFileError(f"{path}: baselines[{i}] ({b.method}) on {printable(d.benchmark)}: {msg}") from None


def baseline_candidate(spec: SweepSpec, baseline: Baseline) -> dict:
    """What a comparison trial sets on top of the dataset's trial defaults: the method with its own
    head normalization (whatever ASCOOD's trials use), its outliers, its fixed options."""
    method = METHODS[baseline.method]
    candidate: dict[str, Any] = {"method": method.name, "feature_norm": method.feature_norm}
    if method.external_outliers and spec.outliers is not None:  # local paths made absolute: trials run elsewhere
        candidate["outliers"] = spec.outliers if spec.outliers == "embedded" else _absolute(spec.outliers)
        if spec.outliers_root is not None:
            candidate["outliers_root"] = _absolute(spec.outliers_root)
    candidate.update(normalize_trial_keys(baseline.options))
    return candidate


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def baseline_config(spec: SweepSpec, dataset: DatasetSpec, baseline: Baseline, seed: int) -> TrainConfig:
    return validate_config({**trial_defaults(spec, dataset), **baseline_candidate(spec, baseline), "seed": seed})


def comparison_seeds(spec: SweepSpec) -> list[int]:
    """The baselines' seeds: the final stage's (paired with the ASCOOD pick's runs)."""
    assert spec.final is not None, "validated: baselines need a final stage"
    return list(spec.final.seeds)


def robust_space(spec: SweepSpec) -> Space:
    assert spec.robust is not None
    return spec.robust.space or spec.space


def robust_config(spec: SweepSpec, dataset: DatasetSpec, params: dict | None = None) -> TrainConfig:
    """A joint trial's config on one dataset: the dataset's trial, the robust stage's overrides, the
    sampled parameters, the stage's seed."""
    assert spec.robust is not None
    values = {**trial_defaults(spec, dataset), **normalize_trial_keys(spec.robust.trial)}
    values.update(params_to_config(params or {}))
    values["seed"] = spec.robust.seed
    return validate_config(values)


def _non_text_key(node: Any, loc: tuple = ()) -> tuple[str, Any] | None:
    """(where, key) of the first mapping key that is not text (YAML's `false:` or `1:`), else None."""
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                return _loc(loc), k
            found = _non_text_key(v, (*loc, k))
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _non_text_key(v, (*loc, i))
            if found:
                return found
    return None


def normalize_trial_keys(values: dict) -> dict:
    """Trial options keyed by TrainConfig field (so a dataset's `lambda` overrides the sweep's `lam`)."""
    return {field_name(k): v for k, v in values.items()}


def trial_defaults(spec: SweepSpec, dataset: DatasetSpec) -> dict:
    """The fixed part of a trial's config: sweep defaults, then the dataset's overrides."""
    return {**normalize_trial_keys(spec.trial), **normalize_trial_keys(dataset.trial), "benchmark": dataset.benchmark}


def trial_config(spec: SweepSpec, dataset: DatasetSpec, params: dict | None = None, seed: int | None = None) -> TrainConfig:
    """The full validated TrainConfig of one trial, given the sampled parameters."""
    values = trial_defaults(spec, dataset)
    values.update(params_to_config(params or {}))
    if seed is not None:
        values["seed"] = seed
    return validate_config(values)


def params_to_config(params: dict) -> dict:
    """Map searched parameters onto TrainConfig fields (α → α_max/α_min)."""
    out = {k: v for k, v in params.items() if k not in ("alpha", "alpha_min_ratio")}
    if "alpha" in params:
        ratio = params.get("alpha_min_ratio", 1.0)
        out["alpha_max"] = params["alpha"]
        out["alpha_min"] = params["alpha"] * ratio
    return out


def space_for(spec: SweepSpec, dataset: DatasetSpec) -> Space:
    """The sweep's space with the dataset's dimensions replacing the same-named ones."""
    if dataset.space is None:
        return spec.space
    merged = {**spec.space.dimensions(), **dataset.space.dimensions()}
    return Space(**merged)


def grid_size(space: Space) -> int:
    return math.prod(len(d.choices) for d in space.dimensions().values())
