"""What runs inside a Ray Tune trial: one `run_trial`, in one process or as Ray Train workers.

A restarted trial (worker restart or `Tuner.restore`) finds its own checkpoint and resumes, and its
Parquet file is rewritten (keyed by epoch), never appended to (see `ascood.sweep.paths`).
"""

from __future__ import annotations

import time

IMPORT_STARTED = time.time()  # a new trial actor imports this module first: its start, not the process's

import gc
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import psutil
import ray
import torch

from ascood import storage
from ascood.config import TrainConfig, validate_config
from ascood.gain import normalized_gain
from ascood.results import RunLabels, finished, read_rows, reused, run_id_for, write_results
from ascood.sweep import shared_output
from ascood.sweep.objective import epoch_metrics, objective_error, objective_value
from ascood.sweep.outcome import GAIN_PREFIX
from ascood.sweep.paths import OPTUNA_TRIAL, results_dir, results_file, safe_name, trial_dir, trial_key
from ascood.sweep.record import Recorded, file_record, joint_record
from ascood.sweep.spec import SEARCHABLE, Objective, params_to_config
from ascood.tracking import TrackedRun, TrackingOptions
from ascood.train import CHECKPOINT, RunFailed
from ascood.trial import checkpoint_epoch, run_trial

Report = Callable[[dict], None]


@dataclass(frozen=True)
class TrialMeta:
    """Everything a trial needs besides its sampled parameters (plain data: it travels to workers)."""

    sweep: str
    out: str
    benchmark: str
    stage: str
    defaults: dict
    objective: dict
    processes: int
    cpus_per_process: float
    gpus_per_process: float
    max_failures: int
    data_root: str | None = None  # where real benchmarks' data is (not part of a run's identity)
    skip_corrupt: bool = False  # leave unreadable images out (counted) instead of failing
    cluster_token: str | None = None  # on a cluster: the output's marker, checked on the trial's node
    # A joint (robust-stage) trial: per dataset {benchmark, defaults, ce}, `ce` the run id of the
    # dataset's CE baseline at `seed`; the searched setting is trained on each in turn.
    joint: tuple[dict, ...] = ()
    seed: int | None = None
    gain_floor: float = 1.0
    gain_ref: float | None = None  # a joint trial's run: CE's objective on its dataset, what `norm_gain` is over
    tracking: dict | None = None  # the sweep's TrackingOptions (as plain data)

    def as_dict(self) -> dict:
        return asdict(self)


def trial_values(config: dict, meta: TrialMeta) -> dict:
    """The trial's TrainConfig values: defaults, then the searched parameters (or the best config,
    or a transfer candidate's setting)."""
    if "best_config" in config:
        values = json.loads(config["best_config"])
    elif "candidate" in config:
        values = {**meta.defaults, **config["candidate"]}
    else:
        params = {k: config[k] for k in SEARCHABLE if k in config}
        values = {**meta.defaults, **params_to_config(params)}
    if "seed" in config:
        values["seed"] = config["seed"]
    return values


def use_gpu(meta: TrialMeta) -> bool:
    """Whether the trial's processes run on a GPU: what it asked Ray for, never what is visible
    (Ray 2.60 no longer hides GPUs from a process that asked for none)."""
    return meta.gpus_per_process > 0


def hide_gpus_unless_asked(meta: TrialMeta) -> None:
    """A CPU trial's process sees no GPU, so nothing in it (a library, a stray `.cuda()`) lands
    on GPU 0 beside another trial's work. Effective while CUDA is not yet initialized here."""
    if not use_gpu(meta) and not torch.cuda.is_initialized():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def cap_gpu_memory(meta: TrialMeta, accelerator) -> None:
    """A trial on a fraction of a GPU may allocate that fraction of its memory, no more: trials
    sharing the GPU then fail alone (out of memory) instead of starving each other."""
    if accelerator.device.type == "cuda" and 0 < meta.gpus_per_process < 1:
        torch.cuda.set_per_process_memory_fraction(meta.gpus_per_process, accelerator.device)


@contextmanager
def trial_accelerator(meta: TrialMeta, mixed_precision: str) -> Iterator:
    """The trial's accelerator on the device it asked Ray for; at the end its references and the
    cached GPU memory are released, since Tune runs the next trial in the same process."""
    from ascood.train import make_accelerator, release

    hide_gpus_unless_asked(meta)
    accelerator = make_accelerator(mixed_precision, use_gpu=use_gpu(meta))
    try:
        cap_gpu_memory(meta, accelerator)
        yield accelerator
    finally:
        release(accelerator)


def _run_and_report(cfg_json: str, meta: TrialMeta, trial_id: str, key: str, report: Report) -> None:
    """Run the trial (or resume it) and report every evaluated epoch's metrics."""
    cfg = validate_config(json.loads(cfg_json))
    objective = Objective(**meta.objective)
    reported: list[dict] = []

    def check_rows(new_rows: list[dict]) -> None:
        failed = objective_error(new_rows, objective)
        if failed:
            raise RunFailed(f"the objective's scorer failed: {failed}")

    def on_rows(new_rows: list[dict]) -> None:
        metrics = epoch_metrics(new_rows, objective)
        reported.append(metrics)
        report(metrics)

    label_rows = None
    if meta.gain_ref is not None:
        label_rows = partial(gain_rows, objective=objective, ce=meta.gain_ref, floor=meta.gain_floor)
    if meta.cluster_token:
        shared_output.verify_marker(meta.out, meta.cluster_token)
    work_dir, kept_dir = trial_dir(meta.out, meta.benchmark, key)
    with trial_accelerator(meta, cfg.mixed_precision) as accelerator:
        if kept_dir is not None and accelerator.is_local_main_process:
            shared_output.pull(kept_dir, work_dir)
        accelerator.wait_for_everyone()
        if kept_dir is not None:  # object storage: keep each checkpoint there before reporting it
            report_epoch = on_rows

            def on_rows(new_rows: list[dict]) -> None:
                if accelerator.is_main_process:
                    shared_output.push(work_dir, kept_dir)
                report_epoch(new_rows)

        result = run_trial(
            cfg,
            work_dir,
            tracking=None if meta.tracking is None else TrackingOptions(**meta.tracking),
            tracked=tracked_as(meta, key, trial_id, work_dir),
            accelerator=accelerator,
            results_path=results_file(meta.out, meta.benchmark, key),
            labels=RunLabels(sweep=meta.sweep, trial_id=trial_id, stage=meta.stage),
            data_root=meta.data_root,
            skip_corrupt=meta.skip_corrupt,
            on_rows=on_rows,
            check_rows=check_rows,
            label_rows=label_rows,
        )
        if accelerator.is_main_process:
            shared_output.push(work_dir, kept_dir)
    last_epoch = max((r["epoch"] for r in result.rows), default=0)
    if result.status == "failed":
        report({"status": "failed", "reason": result.reason, "epoch": last_epoch, "epochs": cfg.epochs})
    elif not reported and result.rows:  # finished before this attempt: report its stored last epoch
        report({**epoch_metrics([r for r in result.rows if r["epoch"] == last_epoch], objective), "status": "completed"})


def tracked_as(meta: TrialMeta, key: str, trial_id: str, work_dir: Path) -> TrackedRun:
    """A trial's tracked run: `<dataset>/<trial key>`, the same across restarts of the trial; its
    stores in the sweep output (in the trial's directory, kept with it, when that is object storage)."""
    return TrackedRun(
        name=f"{safe_name(meta.benchmark)}/{key}", store=str(work_dir) if storage.is_uri(meta.out) else meta.out,
        experiment=meta.sweep, group=meta.benchmark,
        tags={"sweep": meta.sweep, "dataset": meta.benchmark, "stage": meta.stage, "trial": key, "tune_trial_id": trial_id},
    )


def _train_worker(loop_config: dict) -> None:
    """A Ray Train worker: Ray has set up the process group; Accelerate reuses it."""
    meta = TrialMeta(**loop_config["meta"])
    _run_and_report(loop_config["cfg_json"], meta, loop_config["trial_id"], loop_config["key"], ray.train.report)


PROCESS_STARTED = max(psutil.Process().create_time(), IMPORT_STARTED)  # Ray pre-starts idle workers
gc.freeze()  # the imports live as long as the process: no trial's collection need look at them (`release`)


def sweep_trial(config: dict) -> None:
    """The Tune trainable. Every report carries when its process started and when this trial
    entered it (the sweep's timeline: actor start and data build against training)."""
    entered = time.time()

    def report(metrics: dict) -> None:
        ray.tune.report({**metrics, "t_process": PROCESS_STARTED, "t_entered": entered, "pid": os.getpid()})

    meta = TrialMeta(**config["sweep"])
    trial_id = ray.tune.get_context().get_trial_id()
    if meta.joint:
        recorded = trial_record(config)
        if recorded is not None:  # it ended before a crash: Tune restored it, or Optuna's trial came back
            report(recorded.result)
            return
        joint_trial(config, meta, trial_id, report)
        return
    cfg = validate_config(trial_values(config, meta))
    key = trial_key(meta.stage, config, run_id_for(cfg))
    run_dataset(cfg, meta, trial_id, key, report)


def joint_key(meta: TrialMeta, config: dict) -> str:
    """A joint trial's file name on every dataset: its Optuna trial."""
    return f"{meta.stage}-{int(config[OPTUNA_TRIAL]):04d}"


def joint_values(config: dict, meta: TrialMeta, part: dict) -> dict:
    """A joint trial's run on one of its datasets: that dataset's defaults, the searched setting, its seed."""
    params = {k: config[k] for k in SEARCHABLE if k in config}
    return {**part["defaults"], **params_to_config(params), "seed": meta.seed}


def record_files(config: dict) -> list[tuple[str, str]]:
    """(dataset, result file) of a trial from its config: one, or a joint trial's one per dataset
    in the order it trains them."""
    meta = TrialMeta(**config["sweep"])
    if meta.joint:
        key = joint_key(meta, config)
        return [(p["benchmark"], results_file(meta.out, p["benchmark"], key)) for p in meta.joint]
    cfg = validate_config(trial_values(config, meta))
    return [(meta.benchmark, results_file(meta.out, meta.benchmark, trial_key(meta.stage, config, run_id_for(cfg))))]


def trial_record(config: dict) -> Recorded | None:
    """How the trial ended as its own files say (`ascood.sweep.record`), or None when it has not.
    (A dataset trial checks its own file in `run_dataset`, where the joint trial's runs do too.)"""
    meta = TrialMeta(**config["sweep"])
    objective = Objective(**meta.objective)
    files = record_files(config)
    return joint_record(files, objective) if meta.joint else file_record(files[0][1], objective)


def run_dataset(cfg: TrainConfig, meta: TrialMeta, trial_id: str, key: str, report: Report | None) -> None:
    """One run of the sweep on meta's dataset: recorded from an identical completed run of any stage
    when there is one, else trained (or resumed). `report` (None: nothing reported) gets each
    evaluated epoch's metrics, or the stored last epoch's."""
    objective = Objective(**meta.objective)
    tell = report or (lambda metrics: None)
    recorded = file_record(results_file(meta.out, meta.benchmark, key), objective)
    if recorded is not None:  # a terminal record is final: replayed, never trained or written again
        tell(recorded.result)
        return
    if reuse_run(cfg, meta, trial_id, key, objective, tell):
        return
    if meta.processes == 1:
        torch.set_num_threads(max(1, int(meta.cpus_per_process)))
        _run_and_report(cfg.model_dump_json(), meta, trial_id, key, tell)
        return
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpu = use_gpu(meta)
    per_worker = {"CPU": meta.cpus_per_process, **({"GPU": meta.gpus_per_process} if gpu else {})}
    env = {"OMP_NUM_THREADS": str(max(1, int(meta.cpus_per_process)))}
    if not gpu:
        env["ACCELERATE_USE_CPU"] = "1"  # without it Accelerate silently does not wrap DDP on CPU
        env["CUDA_VISIBLE_DEVICES"] = ""  # and Ray would show the workers every GPU of the node
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg_json": cfg.model_dump_json(), "meta": meta.as_dict(), "trial_id": trial_id, "key": key},
        scaling_config=ScalingConfig(num_workers=meta.processes, use_gpu=gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            # a joint (robust) trial trains one run per dataset under one trial id: one Ray Train run each
            name=f"{meta.stage}-{safe_name(meta.benchmark)}-{trial_id}" if meta.gain_ref is not None
            else f"{meta.stage}-{trial_id}",
            storage_path=storage.join(meta.out, "ray-train"),
            failure_config=FailureConfig(max_failures=meta.max_failures),
            callbacks=[TuneReportCallback()] if report is not None else [],
            worker_runtime_env={"env_vars": env},
        ),
    )
    trainer.fit()


def _complete_original(path: str, run_id: str, epochs: int) -> list[dict] | None:
    """The rows of `path` when they are a run `run_id` trained to the end (not itself reused)."""
    rows = [r for r in read_rows(path) if r["run_id"] == run_id]
    if not rows or not finished(rows, epochs) or any(r["reused_from"] for r in rows):
        return None
    return rows


def reuse_run(cfg: TrainConfig, meta: TrialMeta, trial_id: str, key: str, objective: Objective, report: Report) -> bool:
    """Record an identical run (same config and seed) that some trial of this sweep completed, with
    its checkpoint, as this trial's result instead of training it again. True when it did. (A trial
    whose own file is terminal, reused or not, never gets here: `run_dataset` replays it.)"""
    run_id = run_id_for(cfg)
    found = _find_original(meta, run_id, key, cfg.epochs)
    if found is None:
        return False
    source, original = found
    rows = reused(original, RunLabels(meta.sweep, trial_id, meta.stage), source)
    if meta.gain_ref is not None:
        rows = gain_rows(rows, objective=objective, ce=meta.gain_ref, floor=meta.gain_floor)
    write_results(results_file(meta.out, meta.benchmark, key), rows)
    last = max(r["epoch"] for r in rows)
    report({**epoch_metrics([r for r in rows if r["epoch"] == last], objective), "status": "completed"})
    return True


def _find_original(meta: TrialMeta, run_id: str, key: str, epochs: int) -> tuple[str, list[dict]] | None:
    """(trial key, rows) of a trial of this dataset, other than `key`, that trained `run_id` to the end
    and kept its checkpoint."""
    prefix = results_dir(meta.out, meta.benchmark)
    for path in storage.list_files(prefix, ".parquet") if storage.exists(prefix) else []:
        source = Path(path).stem
        if source == key:
            continue
        original = _complete_original(path, run_id, epochs)
        if original is not None and _has_checkpoint(meta, source, epochs):
            return source, original
    return None


def _has_checkpoint(meta: TrialMeta, key: str, epochs: int) -> bool:
    work_dir, kept_dir = trial_dir(meta.out, meta.benchmark, key)
    if kept_dir is not None:  # object storage: the checkpoint is kept there
        return storage.exists(storage.join(kept_dir, CHECKPOINT))
    return (work_dir / CHECKPOINT).exists() and checkpoint_epoch(work_dir) == epochs


def gain_rows(rows: list[dict], *, objective: Objective, ce: float, floor: float) -> list[dict]:
    """The rows with `norm_gain`: each evaluated epoch's validation objective as a gain over CE's."""
    import pandas as pd

    df = pd.DataFrame(rows)
    gain = {}
    for epoch, epoch_rows in df.groupby("epoch"):
        value = objective_value(epoch_rows, objective)
        gain[epoch] = None if value is None else float(normalized_gain(value, ce, metric=objective.name, floor=floor))
    return [{**r, "norm_gain": gain[r["epoch"]]} for r in rows]


def joint_trial(config: dict, meta: TrialMeta, trial_id: str, report: Report) -> None:
    """A robust-stage trial: the searched setting trained on every dataset in turn, after each the
    worst normalized gain over CE so far reported with `epoch` = datasets done. ASHA compares
    trials at the same count of datasets, where that worst case is an upper bound of the final one."""
    objective = Objective(**meta.objective)
    key = joint_key(meta, config)
    gains: dict[str, float] = {}
    trained = 0.0  # the runs' train+eval seconds so far: when this trial's training began (timeline)
    total = len(meta.joint)
    for done, part in enumerate(meta.joint):
        benchmark = part["benchmark"]

        def fail(reason: str, done: int = done, benchmark: str = benchmark) -> None:
            report({"status": "failed", "reason": f"{benchmark}: {reason}", "epoch": done, "epochs": total})

        ce = _ce_value(meta, part, objective)
        if ce is None:
            fail(f"its CE baseline {part['ce']} has not completed")
            return
        sub = TrialMeta(**{**meta.as_dict(), "benchmark": benchmark, "defaults": part["defaults"], "joint": (),
                           "gain_ref": ce})
        cfg = validate_config(joint_values(config, meta, part))
        run_dataset(cfg, sub, trial_id, key, None)
        path = results_file(meta.out, benchmark, key)
        rows = read_rows(path) if storage.exists(path) else []
        if not finished(rows, cfg.epochs):
            fail(next((r["status_reason"] for r in rows if r["status_reason"]), None) or "the run did not complete")
            return
        gain = _last_epoch_rows(rows)[0]["norm_gain"]
        if gain is None or not math.isfinite(gain):
            fail("no objective value to compare with CE")
            return
        gains[benchmark] = gain
        trained += max((r["wall_time_s"] or 0.0) for r in rows) if not rows[0]["reused_from"] else 0.0
        report({"objective": min(gains.values()), "epoch": done + 1, "epochs": total, "status": "running",
                "wall_time_s": trained, **{f"{GAIN_PREFIX}{b}": g for b, g in gains.items()}})


def _last_epoch_rows(rows: list[dict]) -> list[dict]:
    last = max(r["epoch"] for r in rows)
    return [r for r in rows if r["epoch"] == last]


def _ce_value(meta: TrialMeta, part: dict, objective: Objective) -> float | None:
    """The validation objective of the dataset's completed CE baseline run (any stage's), else None."""
    import pandas as pd

    prefix = results_dir(meta.out, part["benchmark"])
    for path in storage.list_files(prefix, ".parquet") if storage.exists(prefix) else []:
        rows = [r for r in read_rows(path) if r["run_id"] == part["ce"]]
        if rows and all(r["status"] == "completed" for r in rows):
            return objective_value(pd.DataFrame(_last_epoch_rows(rows)), objective)
    return None
