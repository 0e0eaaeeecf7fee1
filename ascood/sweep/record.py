"""How a trial ended, as its own result files say: the record a resume trusts over every other.

A sweep keeps three views of a trial: Tune's experiment state (saved only now and then, so after
a kill it may be older than anything else), the Optuna study, and the trial's Parquet file. The
Parquet file is the source of truth: it holds the trial's data, it is what every reader of the
results sees, and it is written first (the driver tells Optuna only after Tune's callbacks have
written the file, `ascood.sweep.phases.SweepSearcher`). A terminal status in it (`completed`,
`stopped-early`, `failed`) is final: a trial that Tune restores as unfinished, or an Optuna trial
handed out again, finds it and replays it (reports what it holds) instead of training, and Optuna
is told what the file says.

A joint (robust-stage) trial has one file per dataset, trained in the sweep's order; its record is
the first dataset's file that is not completed: stopped or failed there means the trial was, all
completed means it completed, anything else means it has not ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ascood import storage
from ascood.results import read_rows
from ascood.sweep.objective import epoch_metrics, objective_value
from ascood.sweep.outcome import GAIN_PREFIX, Outcome
from ascood.sweep.spec import Objective

TERMINAL: tuple[Outcome, ...] = ("completed", "stopped-early", "failed")
REPLAYED = "replayed"  # in a report: what the trial's record holds, not a newly trained epoch


@dataclass(frozen=True)
class Recorded:
    """A trial's terminal record: its status, why, and what the trial reports for it (no null
    values: a scheduler reads a present `objective` as a number)."""

    status: Outcome
    reason: str | None
    result: dict

    def __post_init__(self):
        object.__setattr__(self, "result", {k: v for k, v in self.result.items() if v is not None})


def terminal_rows(rows: list[dict]) -> bool:
    """The rows of one run all carry the same terminal status."""
    statuses = {r["status"] for r in rows}
    return len(statuses) == 1 and next(iter(statuses)) in TERMINAL


def _read(path: str) -> list[dict]:
    return read_rows(path) if storage.exists(path) else []


def _last(rows: list[dict]) -> list[dict]:
    last = max(r["epoch"] for r in rows)
    return [r for r in rows if r["epoch"] == last]


def rows_record(rows: list[dict], objective: Objective) -> Recorded | None:
    """The record of one run's rows, or None when they are not terminal (or there are none)."""
    if not rows or not terminal_rows(rows):
        return None
    status, reason = rows[0]["status"], rows[0]["status_reason"]
    last = _last(rows)
    epochs = int(last[0]["epochs"])
    if status == "failed":
        return Recorded(status, reason, {"status": "failed", "reason": reason, "epoch": int(last[0]["epoch"]),
                                         "epochs": epochs, REPLAYED: True})
    evaluated = [r for r in last if r["epoch"] > 0 and r["split"] is not None]
    # a status row (ended before any evaluation) has no metrics to report
    result = epoch_metrics(evaluated, objective) if evaluated else {"objective": None, "epoch": 0, "epochs": epochs}
    return Recorded(status, reason, {**result, "status": status, REPLAYED: True})


def file_record(path: str, objective: Objective) -> Recorded | None:
    """The record of a trial's own Parquet file (one run), or None when it has not ended."""
    return rows_record(_read(path), objective)


def _joint_pass(paths: list[tuple[str, str]], objective: Objective) -> tuple[Recorded | None, dict[int, float]]:
    """One read of a joint trial's files, in the order it trains them: its record (None: not
    ended) and its worst gain after each dataset it completed."""
    gains: dict[str, float] = {}
    worst: dict[int, float] = {}
    total = len(paths)

    def result(status: str, done: int, **extra) -> dict:
        return {"objective": min(gains.values()) if gains else None, "epoch": done, "epochs": total, "status": status,
                REPLAYED: True, **{f"{GAIN_PREFIX}{b}": g for b, g in gains.items()}, **extra}

    for done, (benchmark, path) in enumerate(paths):
        rows = _read(path)
        rec = rows_record(rows, objective)
        if rec is None:
            return None, worst
        if rec.status != "completed":
            extra = {"reason": f"{benchmark}: {rec.reason}"} if rec.status == "failed" else {}
            return Recorded(rec.status, rec.reason, result(rec.status, done, **extra)), worst
        gain = _last(rows)[0]["norm_gain"]
        if gain is None or not math.isfinite(gain):
            return None, worst  # the trial fails it itself, from the file: nothing to replay
        gains[benchmark] = float(gain)
        worst[done + 1] = min(gains.values())
    return Recorded("completed", None, result("completed", total)), worst


def joint_record(paths: list[tuple[str, str]], objective: Objective) -> Recorded | None:
    """A joint trial's record from its (dataset, file) pairs in the order it trains them."""
    return _joint_pass(paths, objective)[0]


def steps(path: str, objective: Objective) -> dict[int, float]:
    """A trial file's objective at each evaluated epoch, when the file is terminal (else empty)."""
    rows = _read(path)
    if not rows or not terminal_rows(rows):
        return {}
    df = pd.DataFrame([r for r in rows if r["epoch"] > 0])
    out = {}
    for epoch, epoch_rows in df.groupby("epoch") if not df.empty else []:
        value = objective_value(epoch_rows, objective)
        if value is not None and math.isfinite(value):
            out[int(epoch)] = value
    return out


def joint_steps(paths: list[tuple[str, str]], objective: Objective) -> dict[int, float]:
    """A joint trial's worst gain after each dataset it completed, when it has ended (else empty)."""
    recorded, worst = _joint_pass(paths, objective)
    return {} if recorded is None else worst
