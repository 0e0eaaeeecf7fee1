"""What runs inside a Ray Tune trial: one `run_trial`, in one process or as Ray Train workers.

A restarted trial (worker restart or `Tuner.restore`) finds its own checkpoint and resumes, and its
Parquet file is rewritten (keyed by epoch), never appended to (see `ascood.sweep.paths`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import ray
import torch

from ascood import storage
from ascood.config import validate_config
from ascood.results import RunLabels, run_id_for
from ascood.sweep import shared_output
from ascood.sweep.objective import epoch_metrics, objective_error
from ascood.sweep.paths import results_file, trial_dir, trial_key
from ascood.sweep.spec import SEARCHABLE, Objective, params_to_config
from ascood.train import RunFailed
from ascood.trial import run_trial


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


def _run_and_report(cfg_json: str, meta: TrialMeta, trial_id: str, key: str, report) -> None:
    """Run the trial (or resume it) and report every evaluated epoch's metrics."""
    from ascood.train import make_accelerator

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

    if meta.cluster_token:
        shared_output.verify_marker(meta.out, meta.cluster_token)
    work_dir, kept_dir = trial_dir(meta.out, meta.benchmark, key)
    accelerator = make_accelerator(cfg.mixed_precision)
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
        accelerator=accelerator,
        results_path=results_file(meta.out, meta.benchmark, key),
        labels=RunLabels(sweep=meta.sweep, trial_id=trial_id, stage=meta.stage),
        data_root=meta.data_root,
        skip_corrupt=meta.skip_corrupt,
        on_rows=on_rows,
        check_rows=check_rows,
    )
    if accelerator.is_main_process:
        shared_output.push(work_dir, kept_dir)
    last_epoch = max((r["epoch"] for r in result.rows), default=0)
    if result.status == "failed":
        report({"status": "failed", "reason": result.reason, "epoch": last_epoch, "epochs": cfg.epochs})
    elif not reported and result.rows:  # finished before this attempt: report its stored last epoch
        report({**epoch_metrics([r for r in result.rows if r["epoch"] == last_epoch], objective), "status": "completed"})


def _train_worker(loop_config: dict) -> None:
    """A Ray Train worker: Ray has set up the process group; Accelerate reuses it."""
    meta = TrialMeta(**loop_config["meta"])
    _run_and_report(loop_config["cfg_json"], meta, loop_config["trial_id"], loop_config["key"], ray.train.report)


def sweep_trial(config: dict) -> None:
    """The Tune trainable."""
    meta = TrialMeta(**config["sweep"])
    cfg = validate_config(trial_values(config, meta))
    trial_id = ray.tune.get_context().get_trial_id()
    key = trial_key(meta.stage, config, run_id_for(cfg))
    if meta.processes == 1:
        torch.set_num_threads(max(1, int(meta.cpus_per_process)))
        _run_and_report(cfg.model_dump_json(), meta, trial_id, key, ray.tune.report)
        return
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = meta.gpus_per_process > 0
    per_worker = {"CPU": meta.cpus_per_process, **({"GPU": meta.gpus_per_process} if use_gpu else {})}
    env = {"OMP_NUM_THREADS": str(max(1, int(meta.cpus_per_process)))}
    if not use_gpu:
        env["ACCELERATE_USE_CPU"] = "1"  # without it Accelerate silently does not wrap DDP on CPU
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg_json": cfg.model_dump_json(), "meta": meta.as_dict(), "trial_id": trial_id, "key": key},
        scaling_config=ScalingConfig(num_workers=meta.processes, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"{meta.stage}-{trial_id}",
            storage_path=storage.join(meta.out, "ray-train"),
            failure_config=FailureConfig(max_failures=meta.max_failures),
            callbacks=[TuneReportCallback()],
            worker_runtime_env={"env_vars": env},
        ),
    )
    trainer.fit()
