"""The sweep engine: Ray Tune drives one Optuna study per dataset, then a final multi-seed stage.

Layout of the output directory (every path is derived in `SweepPaths`):

    OUT/sweep.yaml            the sweep file this directory was made from (resume refuses others)
    OUT/optuna.db             the Optuna studies, one per dataset (`optuna-dashboard sqlite:///OUT/optuna.db`)
    OUT/ray/<stage>-<dataset> Ray Tune experiment state (what `--resume` restores)
    OUT/trials/<dataset>/…    one directory per trial: its checkpoint
    OUT/results/<dataset>/…   one Parquet file per trial: `pandas.read_parquet(OUT / "results")`

OUT is a local path or, on a cluster, a shared path or object storage URI (s3://, gs://), checked
from every node before any trial starts (`ascood.cluster.storage`); a cluster sweep keeps its live
Optuna SQLite on the driver and copies it to OUT/optuna.db after every finished trial.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune import Callback

from ascood import storage
from ascood.cluster import storage as shared
from ascood.config import validate_config
from ascood.data.registry import get_spec, load_benchmark
from ascood.models import WeightsError, create_model
from ascood.results import read_rows, write_results
from ascood.sweep.objective import ood_selection_names
from ascood.sweep.progress import ProgressCallback
from ascood.sweep.searcher import make_searcher
from ascood.sweep.spec import DatasetSpec, SweepSpec, grid_size, normalize_trial_keys, space_for, trial_defaults
from ascood.sweep.trainable import TrialMeta, results_file, sweep_trial, trial_values
from ascood.trial import RunLabels, run_id_for, status_row

DRIVER_CPUS = 0.1  # a multi-process trial's own actor only waits on its Ray Train workers


class SweepSetupError(ValueError):
    """The sweep cannot start (output directory, data, resources); one line, exit code 2."""


@dataclass(frozen=True)
class SweepPaths:
    out: str  # an absolute local path or a URI
    study: shared.StudyMirror | None = None  # cluster sweeps: the study's live copy on the driver
    token: str | None = None  # cluster sweeps: the shared-output marker trials check on their node

    @property
    def spec_copy(self) -> str:
        return storage.join(self.out, "sweep.yaml")

    @property
    def optuna_db(self) -> str:
        return storage.join(self.out, "optuna.db")

    @property
    def ray(self) -> str:
        return storage.join(self.out, "ray")

    @property
    def results(self) -> str:
        return storage.join(self.out, "results")

    def experiment(self, stage: str, benchmark: str) -> str:
        return storage.join(self.ray, f"{stage}-{benchmark}")


def prepare_output(paths: SweepPaths, spec_text: str, *, resume: bool, fresh: bool) -> None:
    """Claim the output directory for this sweep file, or refuse with the reason."""
    if fresh:
        storage.delete_tree(paths.out)
    previous = storage.read_text(paths.spec_copy)
    if previous is not None:
        if _digest(previous) != _digest(spec_text):
            raise SweepSetupError(
                f"{paths.out}: holds a sweep made from a different sweep file; "
                "use another output, or --fresh to delete it and start anew"
            )
        if not resume:
            raise SweepSetupError(f"{paths.out}: holds this sweep already; use --resume to continue it or --fresh")
        return
    if storage.has_entries(paths.out):
        raise SweepSetupError(f"{paths.out}: exists and is not a sweep output; use another output or --fresh")
    storage.write_text(paths.spec_copy, spec_text)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_datasets(spec: SweepSpec) -> None:
    """Before any trial starts: load (build, or check and decode) every dataset, check the
    objective's OOD names, and load each named pretrained backbone once into its model."""
    for d in spec.datasets:
        data = load_benchmark(d.benchmark, root=spec.data_root)
        defaults = trial_defaults(spec, d)
        if defaults.get("weights"):
            try:
                create_model(defaults.get("backbone", "small_cnn"), num_classes=data.num_classes,
                             weights=Path(defaults["weights"]).expanduser())
            except WeightsError as exc:
                raise SweepSetupError(f"datasets ({d.benchmark}): trial.weights: {exc}") from None
        names = ood_selection_names([(o.name, o.group) for o in data.ood])
        if spec.objective.ood not in names:
            raise SweepSetupError(
                f"objective.ood: {spec.objective.ood!r} is neither a group nor a set of {d.benchmark} "
                f"(expected one of {', '.join(sorted(names))})"
            )


def trial_resources(spec: SweepSpec) -> tuple[dict, float]:
    """(Tune resources of a trial's own actor, CPUs the whole trial needs)."""
    r = spec.resources
    if r.processes_per_trial == 1:
        res = {"cpu": r.cpus_per_process, "gpu": r.gpus_per_process}
        return res, r.cpus_per_process
    return {"cpu": DRIVER_CPUS}, DRIVER_CPUS + r.processes_per_trial * r.cpus_per_process


def concurrency(spec: SweepSpec, cluster_cpus: float, cluster_gpus: float) -> int:
    """Concurrent trials that fit: never more than the sweep allows, never starving Train workers."""
    _, cpus = trial_resources(spec)
    r = spec.resources
    if cpus > cluster_cpus + 1e-9:
        raise SweepSetupError(
            f"resources: a trial needs {cpus:g} CPUs ({r.processes_per_trial} processes × {r.cpus_per_process:g}"
            f"{' + driver' if r.processes_per_trial > 1 else ''}), the cluster has {cluster_cpus:g}"
        )
    fit = math.floor((cluster_cpus + 1e-9) / cpus)
    gpus = r.processes_per_trial * r.gpus_per_process
    if gpus > 0:
        if gpus > cluster_gpus + 1e-9:
            raise SweepSetupError(f"resources: a trial needs {gpus:g} GPUs, the cluster has {cluster_gpus:g}")
        fit = min(fit, math.floor((cluster_gpus + 1e-9) / gpus))
    return max(1, min(r.max_concurrent_trials, fit))


def trial_meta(spec: SweepSpec, dataset: DatasetSpec, stage: str, out: str, token: str | None = None) -> TrialMeta:
    """What every trial of a stage gets; local paths made absolute (trials run in other directories)."""
    r = spec.resources
    defaults = trial_defaults(spec, dataset)
    if defaults.get("weights"):
        defaults["weights"] = str(Path(defaults["weights"]).expanduser().absolute())
    root = spec.data_root
    if root and not storage.is_uri(root):
        root = str(Path(root).expanduser().absolute())
    return TrialMeta(
        sweep=spec.name, out=str(out), benchmark=dataset.benchmark, stage=stage,
        defaults=defaults, objective=spec.objective.model_dump(),
        processes=r.processes_per_trial, cpus_per_process=r.cpus_per_process, gpus_per_process=r.gpus_per_process,
        max_failures=r.max_failures, data_root=root, cluster_token=token,
    )


def num_samples(spec: SweepSpec, dataset: DatasetSpec) -> int:
    if spec.algorithm.name == "grid":
        return grid_size(space_for(spec, dataset))
    return dataset.num_samples or spec.num_samples


class ResultsStatusCallback(Callback):
    """Marks, in a trial's Parquet file, what only the driver knows: stopped early, or errored."""

    def __init__(self, out: str, benchmark: str, stage: str):
        self.out, self.benchmark, self.stage = out, benchmark, stage

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if last.get("status") != "failed" and last.get("epoch", 0) < last.get("epochs", 1):
            self.mark(trial, "stopped-early", f"stopped by the scheduler after epoch {last.get('epoch', 0)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = "trial errored after all retries"
        error_file = getattr(trial, "error_file", None)
        if error_file and os.path.exists(error_file):
            lines = [ln for ln in Path(error_file).read_text().splitlines() if ln.strip()]
            if lines:
                reason = lines[-1][:500]
        self.mark(trial, "failed", reason)

    def mark(self, trial, status: str, reason: str) -> None:
        path = results_file(self.out, self.benchmark, self.stage, trial.trial_id)
        rows = read_rows(path) if storage.exists(path) else []
        if not rows:
            meta = TrialMeta(**trial.config["sweep"])
            cfg = validate_config(trial_values(trial.config, meta))
            spec = get_spec(cfg.benchmark)
            labels = RunLabels(meta.sweep, trial.trial_id, meta.stage)
            rows = [status_row(cfg, spec.setting, spec.embedded, run_id_for(cfg), status, reason, labels)]
        for r in rows:
            r["status"], r["status_reason"] = status, reason
        write_results(path, rows)


@dataclass
class SweepRun:
    spec: SweepSpec
    spec_text: str
    resume: bool = False
    fresh: bool = False
    address: str | None = None


def run_sweep(run: SweepRun, progress) -> SweepPaths:
    """Run (or resume) every dataset's search, then its final stage. Blocks until done."""
    spec = run.spec
    paths = SweepPaths(shared.location(spec.output))
    check_datasets(spec)
    if not run.address:  # on a cluster the output is claimed once every node has been asked
        prepare_output(paths, run.spec_text, resume=run.resume, fresh=run.fresh)
    env = {k: os.environ[k] for k in ("ASCOOD_CACHE", "ASCOOD_DATA", "ASCOOD_SKIP_CORRUPT") if k in os.environ}
    env["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # a failed trial's last report has no objective
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables under our Rich display
    init_kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if run.address:
        _connect(run.address, init_kwargs)
    else:
        ray.init(num_cpus=os.cpu_count(), **init_kwargs)
    try:
        total = ray.cluster_resources()
        if run.address:
            paths = claim_shared_output(run, paths, progress)
            max_conc = cluster_concurrency(spec, total.get("CPU", 0.0), total.get("GPU", 0.0), progress)
        else:
            max_conc = concurrency(spec, total.get("CPU", 0.0), total.get("GPU", 0.0))
        resources, _ = trial_resources(spec)
        trainable = tune.with_resources(sweep_trial, resources)
        study_url = paths.study.url if paths.study else f"sqlite:///{paths.optuna_db}"
        storage_obj = optuna.storages.RDBStorage(study_url)
        for dataset in spec.datasets:
            _search(spec, dataset, paths, trainable, max_conc, storage_obj, progress)
            if spec.final is not None:
                _final(spec, dataset, paths, trainable, max_conc, progress)
        if spec.transfer is not None:
            candidates = transfer_candidates(spec, paths)
            for dataset in spec.datasets:
                _transfer(spec, dataset, paths, trainable, max_conc, progress, candidates)
    finally:
        if paths.study is not None:
            paths.study.push()
        ray.shutdown()
    return paths


def _connect(address: str, init_kwargs: dict) -> None:
    """Join an existing cluster (`auto` inside a submitted job); a failure is one line."""
    host, _, port = address.rpartition(":")
    if "://" not in address and port.isdigit():  # ray.init retries an unreachable address for minutes
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
        except OSError as exc:
            raise SweepSetupError(f"--address {address}: cannot reach the Ray cluster ({exc.strerror or exc}); "
                                  f"is the head up and port {port} open?") from None
    try:
        ray.init(address=address, **init_kwargs)
    except Exception as exc:  # ConnectionError, AuthenticationError, ValueError: all one line here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SweepSetupError(f"--address {address}: cannot join the Ray cluster: {first}") from None


def claim_shared_output(run: SweepRun, paths: SweepPaths, progress) -> SweepPaths:
    """On a cluster: every alive node must see and write the output before it is claimed; trials
    then check a marker on their own node (for nodes that join later)."""
    try:
        nodes = shared.check_shared(paths.out, uuid.uuid4().hex)
    except shared.OutputNotShared as exc:
        raise SweepSetupError(str(exc)) from None
    prepare_output(paths, run.spec_text, resume=run.resume, fresh=run.fresh)
    token = shared.read_marker(paths.out) or uuid.uuid4().hex  # kept across --resume: trials carry it
    shared.write_marker(paths.out, token)
    if nodes == 1 and not storage.is_uri(paths.out):
        progress.console.print(f"[yellow]one node alive: nodes that join later must mount {paths.out} too "
                               "(each trial checks it on its node)[/yellow]")
    study = shared.StudyMirror(paths.out)
    study.pull()
    return SweepPaths(paths.out, study=study, token=token)


def cluster_concurrency(spec: SweepSpec, cluster_cpus: float, cluster_gpus: float, progress) -> int:
    """On a cluster the sweep's own limit: trials that do not fit the nodes alive now wait in
    Ray's queue, which is what makes the autoscaler add nodes."""
    try:
        concurrency(spec, cluster_cpus, cluster_gpus)
    except SweepSetupError as exc:
        progress.console.print(f"[yellow]{exc} alive now; trials wait for the autoscaler to add nodes[/yellow]")
    return spec.resources.max_concurrent_trials


def _run_config(paths: SweepPaths, name: str, callbacks: list, max_failures: int) -> tune.RunConfig:
    if paths.study is not None:
        callbacks = [*callbacks, shared.StudySync(paths.study)]
    return tune.RunConfig(
        name=name,
        storage_path=paths.ray,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        callbacks=callbacks,
        verbose=0,
    )


def _fit(paths: SweepPaths, name: str, trainable, make_tuner) -> None:
    path = storage.join(paths.ray, name)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = make_tuner()
    tuner.fit()


def _search(spec, dataset, paths, trainable, max_conc, storage_obj, progress) -> None:
    stage = "search"
    name = f"{stage}-{dataset.benchmark}"
    objective = spec.objective
    multi = spec.algorithm.multi_objective
    metric = ["objective", "val_id_accuracy"] if multi else "objective"
    mode = [objective.mode, "max"] if multi else objective.mode
    n = num_samples(spec, dataset)
    progress.begin(f"{dataset.benchmark} · search", n, objective.mode)
    meta = trial_meta(spec, dataset, stage, paths.out, paths.token)

    def make_tuner() -> tune.Tuner:
        space = space_for(spec, dataset)
        searcher = make_searcher(
            space=space, algorithm=spec.algorithm, metric=metric, mode=mode, storage=storage_obj,
            study_name=f"{spec.name}-{dataset.benchmark}",
        )
        scheduler = None
        if spec.scheduler is not None:
            epochs = validate_config(meta.defaults).epochs
            scheduler = tune.schedulers.ASHAScheduler(
                time_attr="epoch", metric="objective", mode=objective.mode, max_t=epochs,
                grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor,
            )
        callbacks = [ProgressCallback(f"{dataset.benchmark} · search"),
                     ResultsStatusCallback(str(paths.out), dataset.benchmark, stage)]
        return tune.Tuner(
            trainable,
            param_space={"sweep": meta.as_dict()},
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n,
                                        max_concurrent_trials=max_conc, reuse_actors=True),
            run_config=_run_config(paths, name, callbacks, spec.resources.max_failures),
        )

    _fit(paths, name, trainable, make_tuner)


def _final(spec, dataset, paths, trainable, max_conc, progress) -> None:
    from ascood.sweep.summary import best_search_trial

    stage = "final"
    name = f"{stage}-{dataset.benchmark}"
    best = best_search_trial(paths.results, dataset.benchmark, spec.objective)
    if best is None:
        progress.console.print(f"[yellow]{dataset.benchmark}: no completed search trial; final stage skipped[/yellow]")
        return
    progress.begin(f"{dataset.benchmark} · final", len(spec.final.seeds), spec.objective.mode)
    meta = trial_meta(spec, dataset, stage, paths.out, paths.token)

    def make_tuner() -> tune.Tuner:
        callbacks = [ProgressCallback(f"{dataset.benchmark} · final"),
                     ResultsStatusCallback(str(paths.out), dataset.benchmark, stage)]
        return tune.Tuner(
            trainable,
            param_space={"sweep": meta.as_dict(), "best_config": best.config_json,
                         "seed": tune.grid_search(list(spec.final.seeds))},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_conc, reuse_actors=True),
            run_config=_run_config(paths, name, callbacks, spec.resources.max_failures),
        )

    _fit(paths, name, trainable, make_tuner)


def transfer_candidates(spec: SweepSpec, paths: SweepPaths) -> list[dict]:
    """The settings every dataset is measured with: each dataset's top-k search settings (by the
    validation objective), the sweep's default setting, the plain-CE baseline; deduplicated."""
    from ascood.sweep.summary import ranked_search_trials

    keys = ("alpha_max", "alpha_min", "p_inv", "lam", "sigma", "ood_type", "lr")
    out: list[dict] = []
    for dataset in spec.datasets:
        for row in ranked_search_trials(paths.results, dataset.benchmark, spec.objective)[: spec.transfer.top_k]:
            out.append({k: row[k].item() if hasattr(row[k], "item") else row[k] for k in keys})
    if spec.transfer.defaults:
        base = validate_config({**normalize_trial_keys(spec.trial), "benchmark": spec.datasets[0].benchmark})
        out.append({k: getattr(base, k) for k in keys})
    if spec.transfer.baseline:
        out.append({"method": "ce", "feature_norm": "none"})
    unique: dict[str, dict] = {}
    for c in out:
        unique.setdefault(repr(sorted(c.items())), c)
    return list(unique.values())


def _transfer(spec, dataset, paths, trainable, max_conc, progress, candidates: list[dict]) -> None:
    stage = "transfer"
    name = f"{stage}-{dataset.benchmark}"
    key = f"{dataset.benchmark} · transfer"
    progress.begin(key, len(candidates) * len(spec.transfer.seeds), spec.objective.mode)
    meta = trial_meta(spec, dataset, stage, paths.out, paths.token)

    def make_tuner() -> tune.Tuner:
        callbacks = [ProgressCallback(key), ResultsStatusCallback(str(paths.out), dataset.benchmark, stage)]
        return tune.Tuner(
            trainable,
            param_space={"sweep": meta.as_dict(), "candidate": tune.grid_search(candidates),
                         "seed": tune.grid_search(list(spec.transfer.seeds))},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_conc, reuse_actors=True),
            run_config=_run_config(paths, name, callbacks, spec.resources.max_failures),
        )

    _fit(paths, name, trainable, make_tuner)
