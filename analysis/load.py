"""Reading one or many sweeps' Parquet results into one table, with schema checks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ascood.results import COLUMNS, SCHEMA_VERSION, read_results
from ascood.verdict import setting_id

__all__ = ["AnalysisInputError", "load_sweeps", "setting_id"]


class AnalysisInputError(ValueError):
    """Missing results, or results of another schema; one line naming the path."""


def load_sweeps(outputs: list[str | Path]) -> pd.DataFrame:
    """All result rows of the given sweep output directories, with a `sweep_dir` column."""
    frames = []
    for out in outputs:
        results = Path(out) / "results"
        try:
            df = read_results(results)
        except FileNotFoundError:
            raise AnalysisInputError(f"{out}: no sweep results (expected Parquet files under {results})") from None
        except ValueError as exc:
            raise AnalysisInputError(f"{out}: {exc}") from None
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing or set(df["schema_version"]) != {SCHEMA_VERSION}:
            raise AnalysisInputError(f"{out}: results do not follow schema version {SCHEMA_VERSION} (missing {missing[:3]})")
        frames.append(df.assign(sweep_dir=str(out)))
    return pd.concat(frames, ignore_index=True)
