"""Which trained run of a sweep output to export for one dataset.

1. The report's pick: `OUT/report/summary.json` (`ascood-sweep report`) names the robust pick, a
   setting; of that setting's transfer runs on the dataset (one per seed) the one with the best
   validation objective of the sweep file is taken.
2. Without a report, or a report without a pick (no transfer stage): the final run (a re-trained
   seed of the dataset's best search setting) with the best validation objective.

Validation only: test metrics never choose. A run's directory is `OUT/trials/<dataset>/<key>`,
`<key>` being its result file's name, or the trial it was reused from (`reused_from`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ascood.results import read_results, select
from ascood.sweep.objective import objective_value
from ascood.sweep.paths import safe_name
from ascood.sweep.spec import Objective, SweepFileError, load_sweep
from ascood.verdict import transfer_rows


class PickError(ValueError):
    """A sweep output without a run to export for the dataset; one line naming the path."""


@dataclass(frozen=True)
class Choice:
    run_dir: Path
    chosen_by: str
    objective: Objective


def _rows_by_key(out: Path, dataset: str) -> pd.DataFrame:
    folder = out / "results" / safe_name(dataset)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        have = sorted(p.name for p in (out / "results").iterdir() if p.is_dir()) if (out / "results").is_dir() else []
        raise PickError(f"{out}: no results for dataset {dataset!r} under {folder}"
                        + (f" (result folders here: {', '.join(have)})" if have else ""))
    frames = []
    for f in files:
        df = read_results(f)
        src = df["reused_from"].where(df["reused_from"].notna() & (df["reused_from"] != ""), f.stem)
        frames.append(df.assign(trial_key=src))
    return pd.concat(frames, ignore_index=True)


def _best(rows: pd.DataFrame, objective: Objective) -> tuple[pd.Series, float, int]:
    """(first row, objective value, how many runs were compared) of the run with the best objective."""
    scored = []
    for key, run in rows.groupby("trial_key"):
        value = objective_value(run, objective)
        if value is not None and np.isfinite(value):
            scored.append((value, int(run["seed"].iloc[0]), str(key), run.iloc[0]))
    if not scored:
        raise PickError("no completed run with a validation objective")
    scored.sort(key=lambda t: (-t[0] if objective.mode == "max" else t[0], t[1], t[2]))
    value, _, _, first = scored[0]
    return first, float(value), len(scored)


def report_pick(report: Path) -> tuple[str, str] | None:
    """(setting, label) of the report's robust pick; None without a summary or a pick."""
    path = report / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PickError(f"{path}: not a readable report summary ({type(exc).__name__})") from None
    pick = summary.get("robust_pick") if isinstance(summary, dict) else None
    return None if pick is None else (str(pick), str(summary.get("robust_pick_label") or pick))


def choose_run(out: str | Path, dataset: str, *, report: Path | None = None) -> Choice:
    """The run to export for `dataset` (see the module docstring)."""
    out = Path(out)
    if "://" in str(out):
        raise PickError(f"{out}: export reads a local sweep output (copy it from object storage first)")
    try:
        spec, _ = load_sweep(out / "sweep.yaml")
    except SweepFileError as exc:
        raise PickError(f"{out}: not a sweep output ({exc})") from None
    objective = spec.objective
    rows = _rows_by_key(out, dataset)
    metric = f"{objective.metric} of {objective.scorer}"
    picked = report_pick(report or out / "report")
    if picked is not None:
        setting, label = picked
        transfer = transfer_rows(rows)
        runs = transfer[transfer["setting"] == setting]
        if runs.empty:
            raise PickError(f"{out}: the report's pick {label} ({setting}) has no completed transfer run on {dataset}")
        first, value, n = _best(runs, objective)
        how = (f"the report's pick {label} ({setting}), seed {int(first['seed'])}: the best {metric} "
               f"({value:.4g}) of its {n} transfer run(s) on {dataset}")
    else:
        final = select(rows, stage="final", completed=True, final_epoch=True)
        if final.empty:
            raise PickError(f"{out}: no report pick (run `ascood-sweep report {out}`) and no completed final run "
                            f"of {dataset}")
        first, value, n = _best(final, objective)
        how = f"the best final run of {dataset} by {metric} ({value:.4g}, of {n}; no report pick)"
    run_dir = out / "trials" / safe_name(dataset) / str(first["trial_key"])
    return Choice(run_dir, how, objective)
