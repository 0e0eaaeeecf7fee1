"""Datasets side by side in one Ray session, and a Ctrl-C that leaves only what a crash would."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import yaml
from conftest import stop_tree

KEY = ["trial_id", "epoch", "split", "ood_set", "scorer"]
DATASETS = ["cmnist[classes=2]", "mnist6"]


def _sweep_file(tmp_path, **over):
    data = {
        "name": "p",
        "output": str(tmp_path / "out"),
        "datasets": [{"benchmark": b} for b in DATASETS],
        "trial": {"epochs": 1, "batch_size": 64, "scorers": ["msp", "energy"], "eval_batch_size": 1024},
        "space": {"alpha": {"low": 0.01, "high": 10.0, "log": True}, "p_inv": {"low": 0.05, "high": 0.5}},
        "num_samples": 3,
        "objective": {"metric": "val/auroc", "scorer": "energy"},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 2},
        "final": {"seeds": [0]},
        "tracking": "none",
        **over,
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ascood.cli.sweep", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


def _study(tmp_path, benchmark):
    return optuna.load_study(study_name=f"p-{benchmark}", storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")


def _timeline(tmp_path) -> list[dict]:
    path = tmp_path / "out" / "timeline.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_datasets_run_side_by_side_and_each_keeps_its_own_study(tmp_path):
    proc = _cli(_sweep_file(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    spans = {}
    for b in DATASETS:
        trials = _study(tmp_path, b).trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
        spans[b] = (min(t.datetime_start for t in trials), max(t.datetime_complete for t in trials))
    (a0, a1), (b0, b1) = spans.values()
    assert max(a0, b0) < min(a1, b1), f"the two searches did not overlap in time: {spans}"
    events = _timeline(tmp_path)
    starts = {e["stage"]: e["t"] for e in events if e["event"] == "stage_start"}
    ends = {e["stage"]: e["t"] for e in events if e["event"] == "stage_end"}
    searches = [f"{b} · search" for b in DATASETS]
    assert max(starts[k] for k in searches) < min(ends[k] for k in searches)
    for b in DATASETS:  # each dataset's final stage still comes after its own search
        assert starts[f"{b} · final"] >= ends[f"{b} · search"]
    # two datasets, two slots: while both searches have trials to hand out, each runs one at a time
    # (a dataset whose search has handed out its last trial leaves the slot to the other)
    last_start = {k: sorted(e["t"] for e in events if e.get("stage") == k and e["event"] == "trial_start")[-1]
                  for k in searches}
    both = (max(starts[k] for k in searches), min(last_start.values()))
    assert both[0] < both[1]
    for k in searches:
        running, peak = 0, 0
        for e in sorted((e for e in events if e.get("stage") == k), key=lambda e: e["t"]):
            running += {"trial_start": 1, "trial_completed": -1, "trial_stopped": -1, "trial_failed": -1}.get(e["event"], 0)
            if both[0] <= e["t"] < both[1]:
                peak = max(peak, running)
        assert peak == 1, f"{k}: {peak} trials at once while the other dataset searched"
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert (results["status"] == "completed").all() and not results.duplicated(KEY).any()
    assert results.groupby(["benchmark", "stage"])["trial_id"].nunique().to_dict() == {
        (b, s): n for b in DATASETS for s, n in (("search", 3), ("final", 1))}
    first = [e for e in events if e["event"] == "trial_result"]
    assert first and all(e["t_process"] <= e["t_entered"] <= e["t"] and e["wall_time_s"] > 0 for e in first)


def _reporting_datasets(tmp_path) -> set[str]:
    return {e["stage"] for e in _timeline(tmp_path) if e["event"] == "trial_result"}


def test_ctrl_c_stops_every_dataset_and_resume_finishes_exactly_once(tmp_path):
    path = _sweep_file(tmp_path, num_samples=2, trial={"epochs": 3, "batch_size": 32, "scorers": ["msp", "energy"]})
    proc = subprocess.Popen([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        t0 = time.time()
        while not _reporting_datasets(tmp_path):  # a trial has reported its first of 3 epochs
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() - t0 < 600, "timed out waiting for the sweep"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        stop_tree([proc.pid])
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted; continue with" in out and "Traceback" not in out
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert set(results["status"]) <= {"running", "completed"}, "nothing interrupted is recorded as failed"
    unfinished = 0
    for b in DATASETS:
        states = [t.state for t in _study(tmp_path, b).trials]
        assert optuna.trial.TrialState.FAIL not in states
        search = results[(results["benchmark"] == b) & (results["stage"] == "search")]
        done = int(search.groupby("trial_id")["status"].agg(lambda s: (s == "completed").all()).sum()) if len(search) else 0
        if done < 2:
            unfinished += 1
            assert set(results.loc[results["benchmark"] == b, "stage"]) <= {"search"}, \
                f"{b}: a later stage started on an unfinished search"
    assert unfinished >= 1, "the interrupt came after every search had finished: nothing was tested"

    resumed = _cli(path, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert (results["status"] == "completed").all() and not results.duplicated(KEY).any()
    for b in DATASETS:
        assert [t.state for t in _study(tmp_path, b).trials] == [optuna.trial.TrialState.COMPLETE] * 2
        search = results[(results["benchmark"] == b) & (results["stage"] == "search")]
        assert search["trial_id"].nunique() == 2
        assert set(search.groupby("trial_id")["epoch"].agg(frozenset)) == {frozenset({1, 2, 3})}
