"""Every path of a sweep's output, derived in one place.

    OUT/sweep.yaml            the sweep file this directory was made from (resume refuses others)
    OUT/optuna.db             the Optuna studies, one per dataset (`optuna-dashboard sqlite:///OUT/optuna.db`)
    OUT/ray/sweep             the Ray Tune run of every stage (what `--resume` restores); a
                              racing round of the transfer stage is one of its own, OUT/ray/transfer-seed<n>
    OUT/trials/<dataset>/<key>/   one directory per trial: its checkpoint
    OUT/results/<dataset>/<key>.parquet   one file per trial: `pandas.read_parquet(OUT / "results")`

<dataset> is the dataset's name as `safe_name` writes it: `cmnist` is `cmnist`, a parametrized
name such as `cmnist[classes=2]` is `cmnist_classes_2_<hash>` (the `benchmark` column keeps the
name itself).

OUT is a local path or, on a cluster, a shared path or object storage URI (s3://, gs://). Trial
directories and result files are named by `trial_key` (the Optuna trial, or the run), which
survives a worker restart, `Tuner.restore` and a trial Tune lost in a crash: a restarted trial
finds its own checkpoint and its own Parquet file.
"""

from __future__ import annotations

import hashlib
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


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def safe_name(name: str) -> str:
    """A dataset's name as a file, directory, URI and Ray experiment name: what every on-disk name
    derived from a dataset name is made of.

    A name of letters, digits, `.`, `_` and `-` (`cmnist`, `mnist6`) is itself, so the outputs of
    earlier sweeps still resume. Any other (`cmnist[classes=2]`, `aircraft[split=1]`) has its other
    characters replaced and a hash of the whole name appended (two names never share one):
    `[`, `]`, `*`, `?` are glob patterns to Ray, which finds a restored experiment's searcher and
    callback state with `glob` (a `[classes=2]` directory matches nothing: the sweep resumed without
    its searcher), and a `key=value` directory is a hive partition to pandas and pyarrow, which read
    `OUT/results/cmnist[classes=2]/` as a column `cmnist[classes` valued `2]`.
    """
    if _SAFE.fullmatch(name):
        return name
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{readable}_{digest}" if readable else digest


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
    return shared_output.trial_dirs(out, f"trials/{safe_name(benchmark)}/{key}")


def results_dir(out: str, benchmark: str) -> str:
    """Where the result files of the dataset's trials are (`read_results(OUT / "results")` reads them all)."""
    return storage.join(out, "results", safe_name(benchmark))


def results_file(out: str, benchmark: str, key: str) -> str:
    return storage.join(results_dir(out, benchmark), f"{key}.parquet")
