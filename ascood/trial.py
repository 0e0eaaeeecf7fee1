"""One run, end to end: a config in, trained checkpoint and result rows out.

The only place that knows both the training loop and evaluation. Results are written after every
evaluated epoch (keyed by epoch, atomically), so an interrupted run keeps them and a resumed run
neither loses nor duplicates them.
"""

from __future__ import annotations

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
from ascood.data import load_benchmark
from ascood.data.outliers import outliers_for
from ascood.evaluate import Evaluator, grad_chunk
from ascood.results import (
    RunLabels,
    finished,
    make_rows,
    read_rows,
    run_id_for,
    status_row,
    upsert_epoch,
    with_status,
    write_results,
)
from ascood.scorers import build_scorers
from ascood.tracking import TrackedRun, TrackingOptions, curves, flat_params, tracking_session
from ascood.train import CHECKPOINT, CheckpointMismatch, EpochHook, EpochStats, RunFailed, StepHook, fit, make_accelerator

RESULTS = "results.parquet"
ATTEMPTS = "attempts.jsonl"


@dataclass
class TrialResult:
    run_id: str
    status: str
    reason: str | None
    rows: list[dict] = field(default_factory=list)


def checkpoint_epoch(out_dir: Path) -> int:
    """Epochs completed by the run's checkpoint (0 without one); an unreadable one is refused."""
    ckpt = out_dir / CHECKPOINT
    if not ckpt.exists():
        return 0
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception as exc:
        raise CheckpointMismatch(f"{ckpt}: not a readable checkpoint ({type(exc).__name__}); "
                                 "use --overwrite to start the run anew") from None


def _kept_rows(results: str, run_id: str, done: int, labels: RunLabels) -> list[dict]:
    """Rows of this run already on disk, for the epochs its checkpoint covers, labelled as this
    attempt is (a sweep may continue a trial under a new trial id)."""
    if done == 0 or not storage.exists(results):
        return []
    here = {"sweep": labels.sweep, "trial_id": labels.trial_id, "stage": labels.stage}
    return [{**r, **here} for r in read_rows(results) if r["run_id"] == run_id and r["epoch"] <= done]


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
    labels: RunLabels | None = None,
    data_root: str | Path | None = None,
    skip_corrupt: bool = False,
    on_step: StepHook | None = None,
    on_epoch: EpochHook | None = None,
    on_rows: Callable[[list[dict]], None] | None = None,
    check_rows: Callable[[list[dict]], None] | None = None,
    label_rows: Callable[[list[dict]], list[dict]] | None = None,
    tracking: TrackingOptions | None = None,
    tracked: TrackedRun | None = None,
) -> TrialResult:
    """Train and evaluate one run in `out_dir` (resuming it when a checkpoint is there).

    Rows go to `results_path` (default `out_dir/results.parquet`); `on_rows` sees each evaluated
    epoch's new rows on every process, after that epoch's checkpoint (a sweep reports from them).
    `check_rows` sees them first, right after the evaluation, and may end the run (`RunFailed`);
    `label_rows` may add derived columns to them before anything is written (the robust stage's
    normalized gain), so a completed file never needs rewriting.
    `data_root` and `skip_corrupt` say where a real benchmark's data is and what to do with an
    unreadable image; neither is part of the run's identity. A run whose results file is already
    complete (last epoch, `completed`) with its checkpoint is neither trained nor rewritten.
    `tracking` names the trackers that get the run's curves, as `tracked` (default: the run id,
    stores in `out_dir`); like the data's location, it is not part of the run's identity.
    """
    out_dir = Path(out_dir)
    labels = labels or RunLabels()
    results = results_path or str(out_dir / RESULTS)
    accelerator = accelerator or make_accelerator(cfg.mixed_precision)
    if overwrite and accelerator.is_main_process:
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
        (out_dir / ATTEMPTS).unlink(missing_ok=True)
        if storage.exists(results):
            storage.delete(results)
    accelerator.wait_for_everyone()
    with accelerator.main_process_first():
        data = load_benchmark(cfg.benchmark, root=data_root, skip_corrupt=skip_corrupt)
        outliers = None if cfg.outliers is None else outliers_for(data, cfg.outliers, image_root=cfg.outliers_root,
                                                                  skip_corrupt=skip_corrupt)
    run_id = run_id_for(cfg)
    done = checkpoint_epoch(out_dir)
    rows = _kept_rows(results, run_id, done, labels)
    tracked = tracked or TrackedRun(name=run_id, store=str(out_dir), experiment="ascood-train")
    with tracking_session(tracking if accelerator.is_main_process else None, tracked, out_dir,
                          flat_params(cfg.model_dump()), [f"val/{s}/all/auroc" for s in cfg.scorers], resume_from=done,
                          kept_rows=rows, artifacts=[] if storage.is_uri(results) else [results]) as session:
        if done == cfg.epochs and finished(rows, cfg.epochs):
            session.outcome = "completed"
            return TrialResult(run_id, "completed", None, rows)
        if accelerator.is_main_process:
            log_attempt(out_dir, done)
        wall0 = max((r["wall_time_s"] for r in rows), default=0.0)
        t0 = time.perf_counter()
        evaluator = Evaluator(
            data, accelerator, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
            fpr_convention=cfg.fpr_convention, channels_last=cfg.channels_last,
            grad_batch_size=grad_chunk(cfg.batch_size, cfg.method, accelerator.device),
        )
        scorers = build_scorers(cfg.scorers, cfg.scorer_overrides())
        trial = TrialResult(run_id, "running", None)

        def write(status: str, reason: str | None) -> None:
            nonlocal rows
            rows = with_status(rows, status, reason)
            if accelerator.is_main_process:
                write_results(results, rows or [status_row(cfg, cfg.benchmark, data.setting, data.embedded, run_id, status,
                                                           reason, labels)])

        fresh_rows: list[dict] = []

        def epoch_end(stats: EpochStats, model) -> None:
            nonlocal rows, fresh_rows
            fresh_rows = []
            if stats.epoch % cfg.eval_every == 0 or stats.epoch == cfg.epochs:
                results, used = evaluator.evaluate(model, scorers, search=cfg.scorer_search)
                fresh_rows = make_rows(
                    cfg, cfg.benchmark, data.setting, data.embedded, run_id, stats.epoch, results, used,
                    searched=cfg.scorer_search, train_loss=stats.loss, wall_time_s=wall0 + time.perf_counter() - t0,
                    labels=labels, alpha_eff=stats.alpha_eff,
                )
                if label_rows is not None:
                    fresh_rows = label_rows(fresh_rows)
                rows = upsert_epoch(rows, fresh_rows)
                if check_rows is not None:
                    check_rows(fresh_rows)
                write("running", None)
            if on_epoch is not None:
                on_epoch(stats, model)

        def after_checkpoint(stats: EpochStats) -> None:
            if stats.epoch == cfg.epochs:  # complete only with its checkpoint; before the report,
                write("completed", None)  # after which the process may be stopped at once
            session.log(stats.epoch, curves(fresh_rows, stats))
            if on_rows is not None and fresh_rows:
                on_rows(fresh_rows)

        try:
            fit(cfg, data, out_dir, accelerator, on_epoch_end=epoch_end, on_step=on_step, after_checkpoint=after_checkpoint,
                outliers=outliers)
        except RunFailed as exc:
            trial.status, trial.reason = "failed", str(exc)
            write("failed", str(exc))
            trial.rows = rows
            session.outcome = "failed"
            return trial
        trial.status = "completed"
        if not finished(rows, cfg.epochs):
            write("completed", None)
        trial.rows = rows
        session.outcome = "completed"
        return trial

