"""Every path of a sweep's output, derived in one place.

    OUT/sweep.yaml            the sweep file this directory was made from (resume refuses others)
    OUT/optuna.db             the Optuna studies, one per dataset (`optuna-dashboard sqlite:///OUT/optuna.db`)
    OUT/ray/<stage>-<dataset> Ray Tune experiment state (what `--resume` restores)
    OUT/trials/<dataset>/…    one directory per trial: its checkpoint
    OUT/results/<dataset>/…   one Parquet file per trial: `pandas.read_parquet(OUT / "results")`

OUT is a local path or, on a cluster, a shared path or object storage URI (s3://, gs://). Trial
directories and result files are named by the Tune trial id, which survives both a worker restart
and `Tuner.restore`: a restarted trial finds its own checkpoint and its own Parquet file.
"""

from __future__ import annotations

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


def trial_dir(out: str, benchmark: str, stage: str, trial_id: str) -> tuple[Path, str | None]:
    """(where the trial works, where its files are kept when that is object storage)."""
    return shared_output.trial_dirs(out, f"trials/{benchmark}/{stage}-{trial_id}")


def results_file(out: str, benchmark: str, stage: str, trial_id: str) -> str:
    return storage.join(out, "results", benchmark, f"{stage}-{trial_id}.parquet")
