"""The sweep engine: starts (or joins) Ray, claims the output, runs the stages, shuts Ray down.

What each stage runs is in `ascood.sweep.stages`, the checks before any trial in
`ascood.sweep.preflight`, resource maths in `ascood.sweep.resources`, every output path in
`ascood.sweep.paths`. On a cluster the output is checked from every node before any trial starts
(`ascood.sweep.shared_output`), and the live Optuna SQLite stays on the driver, copied to
OUT/optuna.db after every finished trial.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.experiment import Experiment

from ascood import storage
from ascood.data.env import cache_dir
from ascood.progress_report import PlainLines, reporting
from ascood.sweep import shared_output, timeline
from ascood.sweep.errors import SweepSetupError
from ascood.sweep.local_ray import start_local_ray
from ascood.sweep.paths import SweepPaths
from ascood.sweep.preflight import check_datasets, check_output, prepare_output
from ascood.sweep.progress import SweepProgress
from ascood.sweep.resources import concurrency, trial_resources
from ascood.sweep.spec import SweepSpec
from ascood.sweep.stages import StageContext, run_stages
from ascood.sweep.trainable import sweep_trial
from ascood.tracking import TrackingError, check_available, prepare_mlflow

__all__ = ["SweepRun", "SweepSetupError", "run_sweep"]


@dataclass(frozen=True)
class SweepRun:
    """One invocation of a sweep: the validated file (its text for the resume check) and how to run it."""

    spec: SweepSpec
    spec_text: str
    resume: bool = False
    fresh: bool = False
    address: str | None = None
    skip_corrupt: bool = False  # leave unreadable images of real benchmarks out (counted) instead of failing


def run_sweep(run: SweepRun, progress: SweepProgress) -> SweepPaths:
    """Run (or resume) every stage of the sweep. Blocks until done. A start that fails before the
    first stage (data, output, resources, Ray) leaves nothing behind that it created."""
    spec = run.spec
    started = time.time()
    paths = SweepPaths(shared_output.location(spec.output))
    check_output(paths.out)
    try:
        check_available(spec.tracking)
    except TrackingError as exc:
        raise SweepSetupError(str(exc)) from None
    emit = lambda line: progress.console.print(line, markup=False, highlight=False)  # noqa: E731
    with reporting(PlainLines(emit=emit)):  # above the live table, which a second bar cannot share
        check_datasets(spec, skip_corrupt=run.skip_corrupt)
    checked = time.time()
    if not run.address:  # what a local Ray will have: refuse a trial that cannot fit before starting it
        concurrency(spec, float(os.cpu_count() or 1), float(local_gpus()))
    undo = lambda: None  # noqa: E731
    if not run.address:  # on a cluster the output is claimed once every node has been asked
        undo = prepare_output(paths, run.spec_text, resume=run.resume, fresh=run.fresh)
    env = {k: os.environ[k] for k in ("ASCOOD_CACHE",) if k in os.environ}
    env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "1"  # a worker that asked for no GPU sees none (Ray 2.60 shows them all)
    env["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # a failed trial's last report has no objective
    # Tune's own CSV/JSON/TensorBoard loggers would write a second, differently named copy of every
    # curve under OUT/ray; the trials' tracking (`tracking:`) is where curves go
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables under our Rich display
    init_kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if run.address:
            _connect(run.address, init_kwargs)
        else:
            start_local_ray(cache_dir() / "ray", num_cpus=os.cpu_count(), **init_kwargs)
    except BaseException:
        undo()
        raise
    ray_started = time.time()
    try:
        try:
            total = ray.cluster_resources()
            if run.address:
                paths, undo = claim_shared_output(run, paths, progress)
                max_conc = cluster_concurrency(spec, total.get("CPU", 0.0), total.get("GPU", 0.0), progress)
            else:
                max_conc = concurrency(spec, total.get("CPU", 0.0), total.get("GPU", 0.0))
            try:
                prepare_mlflow(spec.tracking, str(paths.out), spec.name)  # (object storage: validation asked for a server)
            except TrackingError as exc:
                raise SweepSetupError(str(exc)) from None
        except BaseException:
            undo()
            raise
        resources, _ = trial_resources(spec)
        # registered once here, by the name Tune would give it: the sweep's Tune run (and each racing
        # round's), built in a thread of its own, then names it, and Tune's registry is written once
        trainable = tune.with_resources(sweep_trial, resources)
        trainable_name = Experiment.get_trainable_name(trainable)
        tune.register_trainable(trainable_name, trainable)
        timeline.start(None if storage.is_uri(str(paths.out)) else Path(paths.out))
        timeline.record("sweep_start", t_start=started, t_checked=checked, t_ray=ray_started, resume=run.resume)
        ctx = StageContext(
            spec=spec, paths=paths, trainable=trainable_name, max_concurrent=max_conc,
            study_storage=optuna.storages.RDBStorage(paths.study_url), progress=progress,
            skip_corrupt=run.skip_corrupt,
        )
        run_stages(ctx)
        timeline.record("stages_end")
    finally:
        if paths.study is not None:
            paths.study.push()
        ray.shutdown()
    return paths


def local_gpus() -> int:
    """GPUs a local Ray sees (it counts them the same way, through CUDA_VISIBLE_DEVICES)."""
    import torch

    return torch.cuda.device_count()


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


def claim_shared_output(
    run: SweepRun, paths: SweepPaths, progress: SweepProgress
) -> tuple[SweepPaths, Callable[[], None]]:
    """On a cluster: every alive node must see and write the output before it is claimed; trials
    then check a marker on their own node (for nodes that join later). Returns the paths and what
    undoes the claim."""
    try:
        nodes = shared_output.check_shared(paths.out, uuid.uuid4().hex)
    except shared_output.OutputNotShared as exc:
        raise SweepSetupError(str(exc)) from None
    undo = prepare_output(paths, run.spec_text, resume=run.resume, fresh=run.fresh)
    token = shared_output.read_marker(paths.out) or uuid.uuid4().hex  # kept across --resume: trials carry it
    shared_output.write_marker(paths.out, token)
    if nodes == 1 and not storage.is_uri(paths.out):
        progress.console.print(f"[yellow]one node alive: nodes that join later must mount {paths.out} too "
                               "(each trial checks it on its node)[/yellow]")
    study = shared_output.StudyMirror(paths.out)
    study.pull()
    return SweepPaths(paths.out, study=study, token=token), undo


def cluster_concurrency(spec: SweepSpec, cluster_cpus: float, cluster_gpus: float, progress: SweepProgress) -> int:
    """On a cluster the sweep's own limit: trials that do not fit the nodes alive now wait in
    Ray's queue, which is what makes the autoscaler add nodes."""
    try:
        concurrency(spec, cluster_cpus, cluster_gpus)
    except SweepSetupError as exc:
        progress.console.print(f"[yellow]{exc} alive now; trials wait for the autoscaler to add nodes[/yellow]")
    return spec.resources.max_concurrent_trials
