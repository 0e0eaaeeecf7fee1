"""Exactly once when the crash comes late: a trial that ASHA stopped, killed right after the stop
was recorded and before Tune saved its state again, is never trained again after a resume; its
file stays byte-identical and Optuna agrees with it."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import stop_tree

BENCHMARK = "cmnist[classes=2]"
STATE = {"completed": "COMPLETE", "stopped-early": "PRUNED", "failed": "FAIL"}

# The driver, dying as a SIGKILL would at one exact moment: right after the results callback has
# written the first `stopped-early` record (KILL_AT=file), or right after Optuna was told the first
# PRUNED (KILL_AT=study). Tune saves its experiment state in its loop, never inside either.
_KILLED = """
import os, sys
from ascood.sweep import results_status, searcher
at = os.environ["KILL_AT"]
mark, tell = results_status.ResultsStatusCallback.on_trial_complete, searcher.TruthfulOptunaSearch.on_trial_complete
def marked(self, iteration, trials, trial, **info):
    mark(self, iteration, trials, trial, **info)
    if at == "file" and (trial.last_result or {}).get("epoch", 0) < (trial.last_result or {}).get("epochs", 0):
        os._exit(9)
def told(self, trial_id, result=None, error=False):
    tell(self, trial_id, result=result, error=error)
    if at == "study" and self._ot_study._storage.get_trial(self._ot_trials[trial_id]._trial_id).state.name == "PRUNED":
        os._exit(9)
results_status.ResultsStatusCallback.on_trial_complete = marked
searcher.TruthfulOptunaSearch.on_trial_complete = told
from ascood.cli.sweep import main
sys.exit(main())
"""


def _sweep_file(tmp_path: Path) -> Path:
    data = {
        "name": "once", "output": str(tmp_path / "out"),
        "datasets": [{"benchmark": BENCHMARK}],
        "trial": {"epochs": 3, "batch_size": 64, "scorers": ["msp", "energy"], "eval_batch_size": 1024},
        # a wide learning-rate range: some trials learn, some barely move, and ASHA stops the latter
        "space": {"lr": {"low": 1.0e-6, "high": 0.1, "log": True}},
        "num_samples": 5,
        "objective": {"metric": "val/auroc", "scorer": "energy"},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 1},
        "final": None,
    }
    path = tmp_path / "once.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _files(tmp_path: Path) -> dict[str, tuple[str, set[str]]]:
    """search file name -> (content hash, statuses)."""
    root = tmp_path / "out" / "results"
    return {f.name: (hashlib.sha256(f.read_bytes()).hexdigest(), set(pd.read_parquet(f)["status"]))
            for f in sorted(root.rglob("search-*.parquet"))}


def _attempts(tmp_path: Path) -> dict[str, int]:
    """trial directory -> how many times training (re)started in it."""
    return {p.parent.name: len(p.read_text().splitlines()) for p in (tmp_path / "out" / "trials").rglob("attempts.jsonl")}


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name=f"once-{BENCHMARK}", storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")


def _killed(path: Path, kill_at: str, *resume: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(path), "--no-progress", *resume], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env={**os.environ, "KILL_AT": kill_at})
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        stop_tree([proc.pid])  # the Ray daemons the dead driver left
    assert proc.returncode == 9, f"the sweep ended before the moment it was to be killed at ({kill_at}):\n{err[-3000:]}"


@pytest.mark.slow
def test_a_trial_asha_stopped_before_a_kill_is_never_trained_again(tmp_path):
    """Killed twice: right after the first stopped trial's file is written (Optuna not yet told),
    then, resumed, right after Optuna is next told PRUNED (that trial's replay, or a new stop);
    then resumed to the end."""
    path = _sweep_file(tmp_path)
    _killed(path, "file")
    before, attempts_before = _files(tmp_path), _attempts(tmp_path)
    stopped = [name for name, (_, statuses) in before.items() if statuses == {"stopped-early"}]
    assert len(stopped) == 1, before
    [stopped] = stopped
    number = int(stopped.removeprefix("search-").removesuffix(".parquet"))
    assert _study(tmp_path).trials[number].state == optuna.trial.TrialState.RUNNING, "killed before Optuna was told"
    complete = {name: digest for name, (digest, statuses) in before.items() if statuses <= set(STATE)}

    _killed(path, "study", "--resume")
    assert _files(tmp_path)[stopped] == before[stopped]
    assert _study(tmp_path).trials[number].state == optuna.trial.TrialState.PRUNED, "the replay told Optuna the record"
    for name, (digest, statuses) in _files(tmp_path).items():
        if statuses <= set(STATE):
            complete.setdefault(name, digest)

    resumed = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path), "--resume", "--no-progress"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    after, attempts_after = _files(tmp_path), _attempts(tmp_path)
    assert after[stopped] == before[stopped], "the stopped trial's file is byte-identical"
    key = stopped.removesuffix(".parquet")
    assert attempts_after[key] == attempts_before[key], "no training step ran for the stopped trial"
    for name, digest in complete.items():
        assert after[name][0] == digest, f"{name}: complete at a kill, changed after it"
    study = _study(tmp_path)
    assert len(study.trials) == 5 and len(after) == 5, "exactly num_samples trials, in Optuna and in Parquet"
    for t in study.trials:
        [status] = after[f"search-{t.number:04d}.parquet"][1]
        assert STATE[status] == t.state.name, f"trial {t.number}: Parquet says {status}, Optuna {t.state.name}"
