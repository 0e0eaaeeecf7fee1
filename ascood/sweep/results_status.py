"""What only the driver knows about a trial (stopped early by the scheduler, errored after every
retry), written into the trial's own Parquet file so the results never say `running` for it.

The file is the trial's record (`ascood.sweep.record`): a terminal status already in it is never
overwritten, and Optuna is told only once this callback has run (`SweepSearcher`)."""

from __future__ import annotations

import os
from pathlib import Path

from ray.tune import Callback

from ascood import storage
from ascood.config import TrainConfig, validate_config
from ascood.data import get_spec
from ascood.results import RunLabels, finished, read_rows, run_id_for, status_row, with_status, write_results
from ascood.sweep.outcome import Outcome, trial_outcome
from ascood.sweep.paths import results_file, trial_key
from ascood.sweep.record import terminal_rows
from ascood.sweep.trainable import TrialMeta, joint_key, joint_values, trial_values


class ResultsStatusCallback(Callback):
    """Marks, in a trial's Parquet file, what only the driver knows: stopped early, or errored.
    For a joint trial, the file of the dataset it was on (the first not completed)."""

    def __init__(self, out: str):
        self.out = out

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        outcome, joint = trial_outcome(last), bool(TrialMeta(**trial.config["sweep"]).joint)
        done = last.get("epoch", 0)
        if outcome == "stopped-early":
            where = f"after {done} of {last.get('epochs')} datasets" if joint else f"after epoch {done}"
            self.mark(trial, outcome, f"stopped by the scheduler {where}")
        elif outcome == "failed" and not last:
            self.mark(trial, outcome, "the trial ended without reporting a result")
        elif outcome == "failed" and joint:  # (a dataset trial's reported failure wrote its own rows)
            self.mark(trial, outcome, str(last.get("reason") or "the trial failed"))

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = "trial errored after all retries"
        error_file = getattr(trial, "error_file", None)
        if error_file and os.path.exists(error_file):
            lines = [ln for ln in Path(error_file).read_text().splitlines() if ln.strip()]
            if lines:
                reason = lines[-1][:500]
        self.mark(trial, "failed", reason)

    def mark(self, trial, status: Outcome, reason: str) -> None:
        meta = TrialMeta(**trial.config["sweep"])
        if meta.joint:
            target = _joint_target(self.out, meta, trial.config)
            if target is None:
                return  # every dataset completed: nothing of it was stopped or failed
            benchmark, cfg, path = target
            reason = f"{reason} (joint trial, on {benchmark})"
        else:
            cfg = validate_config(trial_values(trial.config, meta))
            path = results_file(self.out, meta.benchmark, trial_key(meta.stage, trial.config, run_id_for(cfg)))
        mark_file(path, cfg, RunLabels(meta.sweep, trial.trial_id, meta.stage), status, reason)


def _joint_target(out: str, meta: TrialMeta, config: dict) -> tuple[str, TrainConfig, str] | None:
    """(dataset, run config, file) of the dataset a joint trial was on: the first whose run is not
    completed."""
    key = joint_key(meta, config)
    for part in meta.joint:
        cfg = validate_config(joint_values(config, meta, part))
        path = results_file(out, part["benchmark"], key)
        rows = [r for r in read_rows(path) if r["run_id"] == run_id_for(cfg)] if storage.exists(path) else []
        if not finished(rows, cfg.epochs):
            return part["benchmark"], cfg, path
    return None


def mark_file(path: str, cfg: TrainConfig, labels: RunLabels, status: Outcome, reason: str) -> None:
    """The run's rows (or one status row) marked with its outcome, unless they are terminal already."""
    rows = read_rows(path) if storage.exists(path) else []
    if rows and terminal_rows(rows):
        return  # a terminal record is final (a replayed trial ends here)
    if not rows:
        spec = get_spec(cfg.benchmark)
        rows = [status_row(cfg, cfg.benchmark, spec.setting, spec.embedded, run_id_for(cfg), status, reason, labels)]
    write_results(path, with_status(rows, status, reason))
