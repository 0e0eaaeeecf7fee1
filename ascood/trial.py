"""One run, end to end: a config in, trained checkpoint and result rows out.

The only place that knows both the training loop and evaluation. Results are written after every
evaluated epoch (keyed by epoch, atomically), so an interrupted run keeps them and a resumed run
neither loses nor duplicates them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from ascood import storage
from ascood.config import TrainConfig
from ascood.data.registry import BenchmarkData, load_benchmark
from ascood.evaluate import Evaluator, SplitResult
from ascood.results import SCHEMA_VERSION, code_version, read_rows, upsert_epoch, write_results
from ascood.scorers import Scorer, build_scorers
from ascood.train import (
    CHECKPOINT,
    EpochHook,
    EpochStats,
    StepHook,
    TrainingDiverged,
    config_json,
    fit,
    make_accelerator,
)

RESULTS = "results.parquet"
ATTEMPTS = "attempts.jsonl"


@dataclass(frozen=True)
class RunLabels:
    """Where a run sits in a sweep (all None for a single `ascood-train` run)."""

    sweep: str | None = None
    trial_id: str | None = None
    stage: str | None = None


@dataclass
class TrialResult:
    run_id: str
    status: str
    reason: str | None
    rows: list[dict] = field(default_factory=list)


def run_id_for(cfg: TrainConfig) -> str:
    digest = hashlib.sha256(config_json(cfg).encode()).hexdigest()[:10]
    return f"{cfg.benchmark}-{cfg.method}-seed{cfg.seed}-{digest}"


def run_columns(cfg: TrainConfig, setting: str, embedded: bool, run_id: str, labels: RunLabels) -> dict:
    """The columns every row of a run shares: identity, labels and hyperparameters."""
    return {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "sweep": labels.sweep, "trial_id": labels.trial_id,
        "stage": labels.stage, "benchmark": cfg.benchmark, "setting": setting, "embedded": embedded,
        "method": cfg.method, "backbone": cfg.backbone, "seed": cfg.seed, "epochs": cfg.epochs,
        "fpr_convention": cfg.fpr_convention, "alpha_max": cfg.alpha_max, "alpha_min": cfg.alpha_min,
        "p_inv": cfg.p_inv, "lam": cfg.lam, "sigma": cfg.sigma, "ood_type": cfg.ood_type,
        "feature_norm": cfg.resolved_feature_norm, "saliency_mode": cfg.saliency_mode, "lr": cfg.lr,
        "fc_lr_factor": cfg.fc_lr_factor, "batch_size": cfg.batch_size,
        "code_version": code_version(), "config_json": config_json(cfg),
    }


def make_rows(
    cfg: TrainConfig, data: BenchmarkData, run_id: str, epoch: int, results: list[SplitResult],
    scorers: list[Scorer], *, searched: bool, train_loss: float | None, wall_time_s: float | None, labels: RunLabels,
) -> list[dict]:
    params = {s.name: json.dumps(s.params(), sort_keys=True) for s in scorers}
    selection = {s.name: "val-auroc" if searched and s.grid else "fixed" for s in scorers}
    base = {
        **run_columns(cfg, data.setting, data.embedded, run_id, labels),
        "epoch": epoch, "train_loss": train_loss, "status": "running", "status_reason": None,
        "wall_time_s": wall_time_s,
    }
    rows = []
    for split in results:
        for s in split.sets:
            rows.append({
                **base, "split": split.split, "ood_set": s.ood_set, "ood_group": s.ood_group, "scorer": s.scorer,
                "scorer_params": params[s.scorer], "scorer_selection": selection[s.scorer], "id_accuracy": split.id_accuracy, "n_id": split.n_id,
                "n_ood": s.n_ood, **s.metrics.as_dict(),
            })
    return rows


def checkpoint_epoch(out_dir: Path) -> int:
    """Epochs completed by the run's checkpoint (0 without one)."""
    ckpt = out_dir / CHECKPOINT
    return int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["epoch"]) if ckpt.exists() else 0


def _kept_rows(results: str, run_id: str, done: int) -> list[dict]:
    """Rows of this run already on disk, for the epochs its checkpoint covers."""
    if done == 0 or not storage.exists(results):
        return []
    return [r for r in read_rows(results) if r["run_id"] == run_id and r["epoch"] <= done]


def log_attempt(out_dir: Path, start_epoch: int) -> None:
    """One line per (re)start of the run: how often a trial was retried, and from where."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ATTEMPTS, "a") as f:
        f.write(json.dumps({"start_epoch": start_epoch, "pid": os.getpid(), "time": time.time()}) + "\n")


def run_trial(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    accelerator: Accelerator | None = None,
    overwrite: bool = False,
    results_path: str | None = None,
    labels: RunLabels = RunLabels(),
    on_step: StepHook | None = None,
    on_epoch: EpochHook | None = None,
    on_rows: Callable[[list[dict]], None] | None = None,
) -> TrialResult:
    """Train and evaluate one run in `out_dir` (resuming it when a checkpoint is there).

    Rows go to `results_path` (default `out_dir/results.parquet`); `on_rows` sees each evaluated
    epoch's new rows on every process, after that epoch's checkpoint (a sweep reports from them).
    """
    out_dir = Path(out_dir)
    results = results_path or str(out_dir / RESULTS)
    accelerator = accelerator or make_accelerator(cfg.mixed_precision)
    if overwrite and accelerator.is_main_process:
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
        (out_dir / ATTEMPTS).unlink(missing_ok=True)
        if storage.exists(results):
            storage.delete(results)
    accelerator.wait_for_everyone()
    with accelerator.main_process_first():
        data = load_benchmark(cfg.benchmark)
    run_id = run_id_for(cfg)
    done = checkpoint_epoch(out_dir)
    rows = _kept_rows(results, run_id, done)
    if accelerator.is_main_process:
        log_attempt(out_dir, done)
    wall0 = max((r["wall_time_s"] for r in rows), default=0.0)
    t0 = time.perf_counter()
    evaluator = Evaluator(
        data, accelerator, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        fpr_convention=cfg.fpr_convention, channels_last=cfg.channels_last,
    )
    scorers = build_scorers(cfg.scorers, cfg.scorer_overrides())
    trial = TrialResult(run_id, "running", None)

    def write(status: str, reason: str | None) -> None:
        for r in rows:
            r["status"], r["status_reason"] = status, reason
        if accelerator.is_main_process:
            write_results(results, rows or [status_row(cfg, data.setting, data.embedded, run_id, status, reason, labels)])

    fresh_rows: list[dict] = []

    def epoch_end(stats: EpochStats, model) -> None:
        nonlocal rows, fresh_rows
        fresh_rows = []
        if stats.epoch % cfg.eval_every == 0 or stats.epoch == cfg.epochs:
            results, used = evaluator.evaluate(model, scorers, search=cfg.scorer_search)
            fresh_rows = make_rows(
                cfg, data, run_id, stats.epoch, results, used, searched=cfg.scorer_search, train_loss=stats.loss,
                wall_time_s=wall0 + time.perf_counter() - t0, labels=labels,
            )
            rows = upsert_epoch(rows, fresh_rows)
            # The last epoch's rows are final as written: the process may be stopped right after.
            write("completed" if stats.epoch == cfg.epochs else "running", None)
        if on_epoch is not None:
            on_epoch(stats, model)

    def after_checkpoint(stats: EpochStats) -> None:
        if on_rows is not None and fresh_rows:
            on_rows(fresh_rows)

    try:
        fit(cfg, data, out_dir, accelerator, on_epoch_end=epoch_end, on_step=on_step, after_checkpoint=after_checkpoint)
    except TrainingDiverged as exc:
        trial.status, trial.reason = "failed", str(exc)
        write("failed", str(exc))
        trial.rows = rows
        return trial
    trial.status = "completed"
    write("completed", None)
    trial.rows = rows
    return trial


def status_row(
    cfg: TrainConfig, setting: str, embedded: bool, run_id: str, status: str, reason: str | None, labels: RunLabels
) -> dict:
    """The one row of a run that ended before any evaluation (metrics null)."""
    return {**run_columns(cfg, setting, embedded, run_id, labels), "epoch": 0, "status": status, "status_reason": reason}
