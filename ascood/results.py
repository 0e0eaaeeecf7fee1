"""The results schema (long format): its columns, every row it holds, its one writer and reader.

One row per (run, epoch evaluated, split, OOD set, scorer); see docs/results-schema.md. Every
command that produces numbers builds its rows here (`make_rows`, `status_row`) and writes them
through `write_results`, so analysis reads one format. Writes are keyed by (run_id, epoch):
rewriting an epoch replaces its rows, never appends a copy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from ascood import storage
from ascood.choices import expected_one_of
from ascood.config import TrainConfig, config_json

if TYPE_CHECKING:
    from ascood.evaluate import SplitResult
    from ascood.scorers import Scorer

SCHEMA_VERSION = 4
# Also in every file's key-value metadata, so a query engine can tell the version without reading rows.
VERSION_KEY = "ascood.schema_version"
# Columns each version added, and what an older file's rows hold there (they predate the column).
ADDED_IN = {
    "scorer_error": (2, None), "alpha_scale": (2, "absolute"), "alpha_eff": (2, None),
    "norm_gain": (3, None), "reused_from": (3, None), "method_options": (4, "{}"),
}
READABLE_VERSIONS = (1, 2, 3, 4)
STATUSES = ("running", "completed", "stopped-early", "failed")
# What names one setting of the method (what the cross-setting analysis compares).
SETTING_COLUMNS = ("alpha_max", "alpha_min", "p_inv", "lam", "sigma", "ood_type", "lr", "alpha_scale")
# The per-OOD-set metrics of a row (all in %); `id_accuracy` is per split.
METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")

SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("run_id", pa.string()),
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("stage", pa.string()),
        ("benchmark", pa.string()),
        ("setting", pa.string()),
        ("embedded", pa.bool_()),
        ("method", pa.string()),
        ("method_options", pa.string()),
        ("backbone", pa.string()),
        ("seed", pa.int64()),
        ("epoch", pa.int32()),
        ("epochs", pa.int32()),
        ("split", pa.string()),
        ("ood_set", pa.string()),
        ("ood_group", pa.string()),
        ("scorer", pa.string()),
        ("scorer_params", pa.string()),
        ("scorer_selection", pa.string()),
        ("scorer_error", pa.string()),
        ("id_accuracy", pa.float64()),
        ("auroc", pa.float64()),
        ("fpr95", pa.float64()),
        ("aupr_in", pa.float64()),
        ("aupr_out", pa.float64()),
        ("fpr_convention", pa.string()),
        ("n_id", pa.int64()),
        ("n_ood", pa.int64()),
        ("alpha_max", pa.float64()),
        ("alpha_min", pa.float64()),
        ("alpha_scale", pa.string()),
        ("alpha_eff", pa.float64()),
        ("p_inv", pa.float64()),
        ("lam", pa.float64()),
        ("sigma", pa.float64()),
        ("ood_type", pa.string()),
        ("feature_norm", pa.string()),
        ("saliency_mode", pa.string()),
        ("lr", pa.float64()),
        ("fc_lr_factor", pa.float64()),
        ("batch_size", pa.int64()),
        ("train_loss", pa.float64()),
        ("status", pa.string()),
        ("status_reason", pa.string()),
        ("norm_gain", pa.float64()),
        ("reused_from", pa.string()),
        ("wall_time_s", pa.float64()),
        ("code_version", pa.string()),
        ("config_json", pa.string()),
    ],
    metadata={VERSION_KEY: str(SCHEMA_VERSION)},
)
COLUMNS = tuple(SCHEMA.names)
KEY = ("run_id", "epoch", "split", "ood_set", "scorer")


@cache
def code_version() -> str:
    """`git describe` of the source tree when available, else the package version."""
    from importlib.metadata import version

    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"ascood-{version('ascood')}"


@dataclass(frozen=True)
class RunLabels:
    """Where a run sits in a sweep (all None for a single `ascood-train` run)."""

    sweep: str | None = None
    trial_id: str | None = None
    stage: str | None = None


def run_id_for(cfg: TrainConfig) -> str:
    digest = hashlib.sha256(config_json(cfg).encode()).hexdigest()[:10]
    return f"{cfg.benchmark}-{cfg.method}-seed{cfg.seed}-{digest}"


def method_options_json(cfg: TrainConfig) -> str:
    """The run's method options as used (the paper's default where unset), and its outlier source:
    `{}` for ASCOOD and CE, whose settings have columns of their own."""
    from ascood.method.registry import METHODS

    method = METHODS[cfg.method]
    options = {name: cfg.method_option(name) for name in method.options}
    if method.external_outliers:
        options["outliers"] = cfg.outliers
    return json.dumps(options, sort_keys=True)


def run_columns(cfg: TrainConfig, benchmark: str, setting: str, embedded: bool, run_id: str,
                labels: RunLabels) -> dict:
    """The columns every row of a run shares: identity, labels and hyperparameters. `benchmark`
    is what the rows were measured on (`ascood-eval --benchmark` may differ from the training one)."""
    return {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "sweep": labels.sweep, "trial_id": labels.trial_id,
        "stage": labels.stage, "benchmark": benchmark, "setting": setting, "embedded": embedded,
        "method": cfg.method, "method_options": method_options_json(cfg), "backbone": cfg.backbone, "seed": cfg.seed,
        "epochs": cfg.epochs,
        "fpr_convention": cfg.fpr_convention, "alpha_max": cfg.alpha_max, "alpha_min": cfg.alpha_min,
        "alpha_scale": cfg.alpha_scale,
        "p_inv": cfg.p_inv, "lam": cfg.lam, "sigma": cfg.sigma, "ood_type": cfg.ood_type,
        "feature_norm": cfg.resolved_feature_norm, "saliency_mode": cfg.saliency_mode, "lr": cfg.lr,
        "fc_lr_factor": cfg.fc_lr_factor, "batch_size": cfg.batch_size,
        "code_version": code_version(), "config_json": config_json(cfg),
    }


def make_rows(
    cfg: TrainConfig, benchmark: str, setting: str, embedded: bool, run_id: str, epoch: int,
    results: list[SplitResult], scorers: list[Scorer], *, searched: bool, train_loss: float | None,
    wall_time_s: float | None, labels: RunLabels, status: str = "running", alpha_eff: float | None = None,
) -> list[dict]:
    """One evaluated epoch's rows: one per (split, OOD set, scorer). `alpha_eff`: the mean absolute α
    the epoch applied (what a relative α meant on this dataset)."""
    params = {s.name: json.dumps(s.params(), sort_keys=True) for s in scorers}
    selection = {s.name: "val-auroc" if searched and s.grid else "fixed" for s in scorers}
    base = {
        **run_columns(cfg, benchmark, setting, embedded, run_id, labels),
        "epoch": epoch, "train_loss": train_loss, "status": status, "status_reason": None,
        "wall_time_s": wall_time_s, "alpha_eff": alpha_eff,
    }
    rows = []
    for split in results:
        for s in split.sets:
            rows.append({
                **base, "split": split.split, "ood_set": s.ood_set, "ood_group": s.ood_group, "scorer": s.scorer,
                "scorer_params": params[s.scorer], "scorer_selection": selection[s.scorer],
                "id_accuracy": split.id_accuracy, "n_id": split.n_id, "n_ood": s.n_ood, "scorer_error": s.error,
                **(s.metrics.as_dict() if s.metrics is not None else {}),
            })
    return rows


def status_row(cfg: TrainConfig, benchmark: str, setting: str, embedded: bool, run_id: str, status: str,
               reason: str | None, labels: RunLabels) -> dict:
    """The one row of a run that ended before any evaluation (metrics null)."""
    return {**run_columns(cfg, benchmark, setting, embedded, run_id, labels),
            "epoch": 0, "status": status, "status_reason": reason}


def with_status(rows: list[dict], status: str, reason: str | None) -> list[dict]:
    """The same rows, every one marked with the run's outcome."""
    return [{**r, "status": status, "status_reason": reason} for r in rows]


def finished(rows: list[dict], epochs: int) -> bool:
    """The rows of a run that trained all its epochs and ended `completed`."""
    return bool(rows) and all(r["status"] == "completed" for r in rows) and max(r["epoch"] for r in rows) == epochs


def reused(rows: list[dict], labels: RunLabels, source: str) -> list[dict]:
    """A completed run's rows recorded for another stage without training it again: labelled as
    that stage's trial, with `reused_from` naming the trial (its key) that trained it."""
    return [{**r, "sweep": labels.sweep, "trial_id": labels.trial_id, "stage": labels.stage, "reused_from": source,
             "norm_gain": None} for r in rows]


def to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows as a table of exactly `SCHEMA`, metadata included: every file of a results directory has
    the same column types (a column null in every row keeps its type), so any engine reads them as one."""
    rows = list(rows)
    for r in rows:
        unknown = set(r) - set(COLUMNS)
        if unknown:
            raise ValueError(f"result row has columns outside the schema: {sorted(unknown)}")
        if r.get("status") not in STATUSES:
            raise ValueError(f"result row status: {expected_one_of(STATUSES, r.get('status'))}")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_results(path: str | Path, rows: Iterable[dict]) -> None:
    """Write rows to one Parquet file atomically (see `ascood.storage.write_table`)."""
    storage.write_table(path, to_table(rows))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read one results file or a directory of them (recursively), checking the schema version."""
    files = [path] if not storage.exists(path) or str(path).endswith(".parquet") else storage.list_files(path, ".parquet")
    if not files or not storage.exists(files[0]):
        raise FileNotFoundError(f"{path}: no results found")
    tables = [_upgraded(f, storage.read_table(f)) for f in files]
    return pa.concat_tables([t.cast(SCHEMA) for t in tables]).to_pandas()


def _upgraded(f: str | Path, t: pa.Table) -> pa.Table:
    """A table of any readable version as the current one (added columns null), or a clear error."""
    versions = set(t.column("schema_version").to_pylist()) if "schema_version" in t.schema.names else {None}
    if versions - set(READABLE_VERSIONS):
        raise ValueError(f"{f}: results schema version {sorted(versions, key=str)} is not one of {READABLE_VERSIONS}")
    for column, (since, old_value) in ADDED_IN.items():
        if column not in t.schema.names and min(versions, default=SCHEMA_VERSION) < since:
            kind = SCHEMA.field(column).type
            t = t.append_column(pa.field(column, kind), pa.array([old_value] * len(t), kind))
    missing = [c for c in SCHEMA.names if c not in t.schema.names]
    if missing:
        version = max(versions, default=SCHEMA_VERSION)
        raise ValueError(f"{f}: results lack column(s) {', '.join(missing[:3])} of schema version {version}")
    t = t.select(SCHEMA.names)
    return t.set_column(0, "schema_version", pa.array([SCHEMA_VERSION] * len(t), pa.int32()))


def read_rows(path: str | Path) -> list[dict]:
    """One results file as a list of row dicts (nulls as None), checking the schema version."""
    return _upgraded(path, storage.read_table(path)).to_pylist()


def upsert_epoch(rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """Replace the rows of the epochs in `new_rows`, keep every other epoch's rows."""
    epochs = {r["epoch"] for r in new_rows}
    return [r for r in rows if r["epoch"] not in epochs] + new_rows


def group_means(df: pd.DataFrame) -> pd.DataFrame:
    """Per (run, epoch, split, scorer, OOD group): plain means of the per-set metrics (OpenOOD)."""
    keys = ["run_id", "epoch", "split", "scorer", "ood_group"]
    return df.groupby(keys, as_index=False, sort=False)[list(METRICS)].mean()


def last_epoch(df: pd.DataFrame) -> pd.DataFrame:
    """Each trial's rows at its last evaluated epoch."""
    last = df.groupby("trial_id")["epoch"].transform("max")
    return df[df["epoch"] == last]


def select(
    df: pd.DataFrame, *, stage: str | None = None, split: str | None = None, scorer: str | None = None,
    ood: str | None = None, completed: bool = False, final_epoch: bool = False,
) -> pd.DataFrame:
    """The rows most questions start from. `ood`: "all", a group or one set; `completed`: evaluated
    rows of completed runs only; `final_epoch`: each trial's last evaluated epoch (after the rest)."""
    sel = pd.Series(True, index=df.index)
    if stage is not None:
        sel &= df["stage"] == stage
    if split is not None:
        sel &= df["split"] == split
    if scorer is not None:
        sel &= df["scorer"] == scorer
    if ood is not None and ood != "all":
        sel &= (df["ood_group"] == ood) | (df["ood_set"] == ood)
    if completed:
        sel &= (df["status"] == "completed") & (df["epoch"] > 0)
    out = df[sel]
    return last_epoch(out) if final_epoch else out
