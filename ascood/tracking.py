"""Experiment tracking: each run's per-epoch curves and parameters sent to TensorBoard, MLflow or W&B.

One tracked run per training run (a sweep trial, or one `ascood-train`), found again by its name,
so a run continued after a crash writes into its own tracked run. Curves are logged once an
epoch's checkpoint is committed, so nothing tracked describes training that a crash undid; a
sidecar file in the run's directory says how far logging got, and a resumed run first logs, from
its stored result rows, any committed epoch that a crash kept from being logged. Each tracker also
refuses a step twice in its own way: TensorBoard purges steps from the resume point on, MLflow
skips steps its history holds, W&B ignores steps that are not past its last.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict

TRACKERS = ("tensorboard", "mlflow", "wandb")
SIDECAR = "tracking.json"
CURVE_METRICS = ("auroc", "fpr95")
# A run's end as MLflow's run status and W&B's exit code.
STATUS = {"completed": ("FINISHED", 0), "failed": ("FAILED", 1), "interrupted": ("KILLED", 1)}


class TrackingError(ValueError):
    """A tracker that cannot be used as configured (its library missing, its store unusable)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowTracking(_Strict):
    uri: str | None = None  # default: a SQLite store beside the run (OUT/mlflow.db), artifacts in OUT/mlruns
    experiment: str | None = None  # default: the sweep's name (`ascood-train` for single runs)


class WandbTracking(_Strict):
    project: str | None = None  # default: the sweep's name
    entity: str | None = None
    mode: Literal["offline", "online"] | None = None  # default: $WANDB_MODE, else offline


def _entries(value: Any) -> Any:
    """`tracking:` as a list of names (`[tensorboard, mlflow]`), `none`, or a mapping of options."""
    if value is None or value == "none" or value == []:
        return {"tensorboard": False}
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        unknown = [v for v in value if v not in TRACKERS]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a tracker; expected some of {', '.join(TRACKERS)} (or none)")
        return {"tensorboard": "tensorboard" in value, **{n: {} for n in ("mlflow", "wandb") if n in value}}
    if isinstance(value, dict):
        return {"tensorboard": False, **{k: ({} if v is True else None if v is False else v) for k, v in value.items()}}
    return value


class TrackingOptions(_Strict):
    """Which trackers see the runs. Default: TensorBoard only."""

    tensorboard: bool = True
    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None

    @property
    def names(self) -> list[str]:
        return [n for n in TRACKERS if getattr(self, n)]


Tracking = Annotated[TrackingOptions, BeforeValidator(_entries)]


def parse_tracking(value: Any) -> TrackingOptions:
    """The `--tracking` value (comma-separated names, or `none`) as options."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(Tracking).validate_python(value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def check_available(options: TrackingOptions) -> None:
    """Before a sweep's first trial: every named tracker's library imports (else one line)."""
    for name in options.names:
        try:
            __import__({"tensorboard": "torch.utils.tensorboard"}.get(name, name))
        except ImportError:
            raise TrackingError(f"tracking: {name} needs the {name} package: pip install 'ascood[tracking]'") from None


def prepare_mlflow(options: TrackingOptions, store: str, experiment: str) -> None:
    """In the sweep's driver, before any trial: MLflow's store made (a fresh SQLite store runs its
    schema migrations, which two trials starting together would race) and the sweep's experiment
    created, so trials only open them."""
    if options.mlflow is None:
        return
    where = Path(store).absolute()
    try:
        _Mlflow.experiment_id(options.mlflow, where, experiment)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise TrackingError(f"tracking.mlflow: {_Mlflow.uri(options.mlflow, where)}: {type(exc).__name__}: {first}") from None


@dataclass(frozen=True)
class TrackedRun:
    """Where and as what one run is tracked (plain values: it travels to trial processes)."""

    name: str  # e.g. "cmnist/search-0003": the run's name in every tracker, and how it is found again
    store: str  # local directory holding the default stores: <store>/tb, <store>/mlflow.db, <store>/wandb
    experiment: str  # the sweep (MLflow experiment, W&B project)
    tags: dict[str, str] = field(default_factory=dict)
    group: str | None = None  # W&B group: the dataset


def curves(rows: Iterable[dict], stats: Any | None = None) -> dict[str, float]:
    """One evaluated epoch's curves: training statistics (when the epoch's stats are at hand) and,
    per split, ID accuracy and each scorer's AUROC and FPR@95 per OOD group and over all OOD sets
    (plain means of the per-set values, as the results' groups are)."""
    out: dict[str, float] = {}
    if stats is not None:
        out.update({"train/loss": stats.loss, "train/ce": stats.ce, "train/kl": stats.kl, "train/lr": stats.lr,
                    "train/alpha": stats.alpha, "train/epoch_seconds": stats.seconds})
        if stats.alpha_eff is not None:
            out["train/alpha_eff"] = stats.alpha_eff
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r.get("train_loss") is not None and stats is None:
            out["train/loss"] = r["train_loss"]
        if r.get("split") is None or r.get("id_accuracy") is None:
            continue
        out[f"{r['split']}/id_accuracy"] = r["id_accuracy"]
        for metric in CURVE_METRICS:
            if r.get(metric) is None:
                continue
            for group in (r["ood_group"], "all"):
                groups.setdefault(f"{r['split']}/{r['scorer']}/{group}/{metric}", []).append(r[metric])
    out.update({k: sum(v) / len(v) for k, v in groups.items()})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def flat_params(config: dict) -> dict[str, str | int | float | bool]:
    """A run's config as flat scalar parameters (lists and mappings as JSON text)."""
    out: dict[str, str | int | float | bool] = {}
    for k, v in sorted(config.items()):
        if v is None:
            continue
        out[k] = v if isinstance(v, str | int | float | bool) else json.dumps(v, sort_keys=True)
    return out


class Tracker(Protocol):
    def log(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def close(self, artifacts: list[str], status: str) -> None: ...


class _TensorBoard:
    """One event-file directory per run; a resumed run purges what a crashed attempt logged past it."""

    def __init__(self, run: TrackedRun, params: dict, hparam_metrics: list[str], resume_from: int):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step: TensorBoard drops this directory's older events from that step on
        self.writer = SummaryWriter(str(Path(run.store) / "tb" / run.name), purge_step=resume_from + 1)
        if not resume_from:
            exp, ssi, sei = hparams(params, dict.fromkeys(hparam_metrics, 0.0))
            for summary in (exp, ssi, sei):
                self.writer.file_writer.add_summary(summary)

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def close(self, artifacts: list[str], status: str) -> None:
        self.writer.close()


class _Mlflow:
    """One experiment per sweep, one run per trial found again by its `ascood.run` tag."""

    RUN_TAG = "ascood.run"

    def __init__(self, options: MlflowTracking, run: TrackedRun, params: dict):
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackingError("tracking: mlflow needs the mlflow package: pip install 'ascood[tracking]'") from None
        store = Path(run.store).absolute()
        eid = self.experiment_id(options, store, run.experiment)
        self.client = MlflowClient(tracking_uri=self.uri(options, store))
        found = self.client.search_runs([eid], filter_string=f"tags.`{self.RUN_TAG}` = '{run.name}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = {k: max(m.step for m in self.client.get_metric_history(self.run_id, k))
                           for k in found[0].data.metrics}
        else:
            tags = {self.RUN_TAG: run.name, **run.tags}
            self.run_id = self.client.create_run(eid, run_name=run.name, tags=tags).info.run_id
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
            self.logged = {}

    @staticmethod
    def uri(options: MlflowTracking, store: Path) -> str:
        return options.uri or f"sqlite:///{store / 'mlflow.db'}"

    @classmethod
    def experiment_id(cls, options: MlflowTracking, store: Path, default_name: str) -> str:
        """The experiment's id, creating it (and a local store) when it is not there yet."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=cls.uri(options, store))
        name = options.experiment or default_name
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=None if options.uri else (store / "mlruns").as_uri())
        except Exception:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        fresh = [Metric(k, v, now, epoch) for k, v in metrics.items() if self.logged.get(k, 0) < epoch]
        if fresh:
            self.client.log_batch(self.run_id, metrics=fresh)
        self.logged.update({m.key: epoch for m in fresh})

    def close(self, artifacts: list[str], status: str) -> None:
        for path in artifacts:
            if os.path.exists(path):
                self.client.log_artifact(self.run_id, path)
        self.client.set_terminated(self.run_id, status=STATUS[status][0])


class _Wandb:
    """Offline unless configured otherwise; the run id is derived from the run's name, so a resumed
    run continues the same W&B run (`wandb sync` merges its offline directories)."""

    def __init__(self, options: WandbTracking, run: TrackedRun, params: dict):
        try:
            import wandb
        except ImportError:
            raise TrackingError("tracking: wandb needs the wandb package: pip install 'ascood[tracking]'") from None
        directory = Path(run.store) / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        mode = options.mode or os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(
            project=options.project or run.experiment, entity=options.entity, id=wandb_id(run), name=run.name,
            group=run.group, job_type=run.tags.get("stage"), tags=[f"{k}:{v}"[:64] for k, v in run.tags.items()],
            config=params, dir=str(directory), mode=mode, resume="allow", reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, save_code=False),
        )

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "epoch": epoch}, step=epoch)

    def close(self, artifacts: list[str], status: str) -> None:
        self.run.finish(exit_code=STATUS[status][1])


def wandb_id(run: TrackedRun) -> str:
    """A W&B run id (letters, digits, - and _) that only this run of this experiment has."""
    digest = hashlib.blake2b(f"{run.experiment}\0{run.name}".encode(), digest_size=5).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', run.name)[:48]}-{digest}"


class TrackingSession:
    """The trackers of one run, opened at its start and closed at its end (main process only).
    `outcome` is what the run says of its end before the session closes (else `interrupted`)."""

    def __init__(self, options: TrackingOptions, run: TrackedRun, work_dir: Path, params: dict,
                 hparam_metrics: list[str], resume_from: int):
        self.outcome = "interrupted"
        self.trackers: list[Tracker] = []
        self.sidecar = Path(work_dir) / SIDECAR
        if not options.names:
            self.logged_through = resume_from
            return
        state = _read_state(self.sidecar)
        self.generation = state.get("generation", 0)
        if resume_from == 0 and state.get("logged_through", 0) > 0:
            self.generation += 1  # the run starts anew (--overwrite): a new tracked run, not the old one continued
        if self.generation:
            run = replace(run, name=f"{run.name}#{self.generation}")
        self.logged_through = min(state.get("logged_through", 0), resume_from)
        self._save()
        try:
            if options.tensorboard:
                self.trackers.append(_TensorBoard(run, params, hparam_metrics, self.logged_through))
            if options.mlflow is not None:
                self.trackers.append(_Mlflow(options.mlflow, run, params))
            if options.wandb is not None:
                self.trackers.append(_Wandb(options.wandb, run, params))
        except BaseException:
            self.close([], "interrupted")
            raise

    def backfill(self, rows: list[dict], done: int) -> None:
        """Log, from stored rows, the committed epochs a crash kept from being logged."""
        for epoch in range(self.logged_through + 1, done + 1):
            epoch_rows = [r for r in rows if r["epoch"] == epoch]
            if epoch_rows:
                self.log(epoch, curves(epoch_rows))

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.trackers or epoch <= self.logged_through or not metrics:
            return
        for tracker in self.trackers:
            tracker.log(epoch, metrics)
        self.logged_through = epoch
        self._save()

    def _save(self) -> None:
        self.sidecar.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.sidecar.with_suffix(".tmp")
        tmp.write_text(json.dumps({"logged_through": self.logged_through, "generation": self.generation}))
        os.replace(tmp, self.sidecar)

    def close(self, artifacts: list[str], status: str) -> None:
        """`status`: `completed`, `failed` or `interrupted` (the run raised)."""
        for tracker in self.trackers:
            tracker.close(artifacts, status)
        self.trackers = []


@contextmanager
def tracking_session(options: TrackingOptions | None, run: TrackedRun, work_dir: Path, params: dict,
                     hparam_metrics: list[str], *, resume_from: int, kept_rows: list[dict],
                     artifacts: list[str]) -> Iterator[TrackingSession]:
    """The run's trackers (none when `options` is None: another process than the main one), with
    the committed epochs a crash kept from being logged logged first; closed with the run's outcome."""
    session = TrackingSession(options or TrackingOptions(tensorboard=False), run, work_dir, params, hparam_metrics,
                              resume_from)
    try:
        session.backfill(kept_rows, resume_from)
        yield session
    finally:
        session.close(artifacts, session.outcome)


def _read_state(path: Path) -> dict[str, int]:
    try:
        state = json.loads(path.read_text())
        return {k: int(state[k]) for k in ("logged_through", "generation") if k in state}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
