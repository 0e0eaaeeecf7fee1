"""Every path of a sweep's output, derived in one place.

    OUT/sweep.yaml            the sweep file this directory was made from (resume refuses others)
    OUT/optuna.db             the Optuna studies, one per dataset (`optuna-dashboard sqlite:///OUT/optuna.db`)
    OUT/ray/<stage>-<dataset> Ray Tune experiment state (what `--resume` restores)
    OUT/trials/<dataset>/<key>/   one directory per trial: its checkpoint
    OUT/results/<dataset>/<key>.parquet   one file per trial: `pandas.read_parquet(OUT / "results")`

OUT is a local path or, on a cluster, a shared path or object storage URI (s3://, gs://). Trial
directories and result files are named by `trial_key` (the Optuna trial, or the run), which
survives a worker restart, `Tuner.restore` and a trial Tune lost in a crash: a restarted trial
finds its own checkpoint and its own Parquet file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ascood import storage
from ascood.sweep import shared_output


@dataclass(frozen=True)
class SweepPaths:
    out: str  # an absolute local path or a URI
    study: shared_output.StudyMirror | None = None  # cluster sweeps: the study's live copy on the driver
    token: str | None = None  # cluster sweeps: the shared-output marker trials check on their node

    @property
    def spec_copy(self) -> str:
        return storage.join(self.out, "sweep.yaml")

    @property
    def optuna_db(self) -> str:
        return storage.join(self.out, "optuna.db")

    @property
    def study_url(self) -> str:
        return self.study.url if self.study else f"sqlite:///{self.optuna_db}"

    @property
    def ray(self) -> str:
        return storage.join(self.out, "ray")

    @property
    def results(self) -> str:
        return storage.join(self.out, "results")

    def experiment(self, stage: str, benchmark: str) -> str:
        return storage.join(self.ray, experiment_name(stage, benchmark))


def experiment_name(stage: str, benchmark: str) -> str:
    return f"{stage}-{benchmark}"


OPTUNA_TRIAL = "optuna_trial"  # added to a searched trial's config: the Optuna trial it tells


def trial_key(stage: str, config: dict, run_id: str) -> str:
    """What names a trial's directory and result file. Not Tune's trial id: a trial that Tune lost
    in a crash and runs again under a new id must find its own checkpoint and file. A searched
    trial is its Optuna trial; a final or transfer trial is its run (config and seed)."""
    if OPTUNA_TRIAL in config:
        return f"{stage}-{int(config[OPTUNA_TRIAL]):04d}"
    return f"{stage}-{re.sub(r'[^A-Za-z0-9._-]', '_', run_id)}"  # `cars[split=1]` is no file or URI name


def trial_dir(out: str, benchmark: str, key: str) -> tuple[Path, str | None]:
    """(where the trial works, where its files are kept when that is object storage)."""
    return shared_output.trial_dirs(out, f"trials/{benchmark}/{key}")


def results_file(out: str, benchmark: str, key: str) -> str:
    return storage.join(out, "results", benchmark, f"{key}.parquet")
