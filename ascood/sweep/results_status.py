"""What only the driver knows about a trial (stopped early by the scheduler, errored after every
retry), written into the trial's own Parquet file so the results never say `running` for it."""

from __future__ import annotations

import os
from pathlib import Path

from ray.tune import Callback

from ascood import storage
from ascood.config import validate_config
from ascood.data import get_spec
from ascood.results import RunLabels, read_rows, run_id_for, status_row, with_status, write_results
from ascood.sweep.outcome import Outcome, trial_outcome
from ascood.sweep.paths import results_file, trial_key
from ascood.sweep.trainable import TrialMeta, trial_values


class ResultsStatusCallback(Callback):
    """Marks, in a trial's Parquet file, what only the driver knows: stopped early, or errored.
    Not a joint trial's: each of its runs is complete or failed on its own."""

    def __init__(self, out: str):
        self.out = out

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        outcome = trial_outcome(last)
        if outcome == "stopped-early":
            self.mark(trial, outcome, f"stopped by the scheduler after epoch {last.get('epoch', 0)}")
        elif outcome == "failed" and not last:  # a reported failure wrote its own rows
            self.mark(trial, outcome, "the trial ended without reporting a result")

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
            return
        cfg = validate_config(trial_values(trial.config, meta))
        run_id = run_id_for(cfg)
        path = results_file(self.out, meta.benchmark, trial_key(meta.stage, trial.config, run_id))
        rows = read_rows(path) if storage.exists(path) else []
        if not rows:
            spec = get_spec(cfg.benchmark)
            labels = RunLabels(meta.sweep, trial.trial_id, meta.stage)
            rows = [status_row(cfg, cfg.benchmark, spec.setting, spec.embedded, run_id, status, reason, labels)]
        write_results(path, with_status(rows, status, reason))
