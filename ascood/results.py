"""The results schema (long format) and its one writer: atomic, keyed Parquet files.

One row per (run, epoch evaluated, split, OOD set, scorer); see docs/results-schema.md. Every
command that produces numbers writes through `write_results`, so analysis reads one format.
Writes are keyed by (run_id, epoch): rewriting an epoch replaces its rows, never appends a copy.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ascood import storage

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "stopped-early", "failed")

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
        ("wall_time_s", pa.float64()),
        ("code_version", pa.string()),
        ("config_json", pa.string()),
    ]
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


def to_table(rows: Iterable[dict]) -> pa.Table:
    rows = list(rows)
    for r in rows:
        unknown = set(r) - set(COLUMNS)
        if unknown:
            raise ValueError(f"result row has columns outside the schema: {sorted(unknown)}")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_results(path: str | Path, rows: Iterable[dict]) -> None:
    """Write rows to one Parquet file atomically (see `ascood.storage.write_table`)."""
    storage.write_table(path, to_table(rows))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read one results file or a directory of them (recursively), checking the schema version."""
    files = [path] if not storage.exists(path) or str(path).endswith(".parquet") else storage.list_files(path, ".parquet")
    if not files or not storage.exists(files[0]):
        raise FileNotFoundError(f"{path}: no results found")
    tables = [storage.read_table(f) for f in files]
    for f, t in zip(files, tables, strict=True):
        if "schema_version" not in t.schema.names or set(t.column("schema_version").to_pylist()) - {SCHEMA_VERSION}:
            raise ValueError(f"{f}: results schema version is not {SCHEMA_VERSION}")
        missing = [c for c in SCHEMA.names if c not in t.schema.names]
        if missing:
            raise ValueError(f"{f}: results lack column(s) {', '.join(missing[:3])} of schema version {SCHEMA_VERSION}")
    return pa.concat_tables([t.cast(SCHEMA) for t in tables]).to_pandas()


def read_rows(path: str | Path) -> list[dict]:
    """One results file as a list of row dicts (nulls as None), checking the schema version."""
    rows = storage.read_table(path).to_pylist()
    bad = {r["schema_version"] for r in rows} - {SCHEMA_VERSION}
    if bad:
        raise ValueError(f"{path}: results schema version {sorted(bad)}, expected {SCHEMA_VERSION}")
    return rows


def upsert_epoch(rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """Replace the rows of the epochs in `new_rows`, keep every other epoch's rows."""
    epochs = {r["epoch"] for r in new_rows}
    return [r for r in rows if r["epoch"] not in epochs] + new_rows


def group_means(df: pd.DataFrame) -> pd.DataFrame:
    """Per (run, epoch, split, scorer, OOD group): plain means of the per-set metrics (OpenOOD)."""
    keys = ["run_id", "epoch", "split", "scorer", "ood_group"]
    metrics = ["auroc", "fpr95", "aupr_in", "aupr_out"]
    return df.groupby(keys, as_index=False, sort=False)[metrics].mean()
