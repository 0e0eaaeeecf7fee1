"""Real sweeps: real Ray (local, 2 CPUs), real Optuna (SQLite), real Parquet. Small and short."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from conftest import stop_tree

from ascood.sweep.paths import results_file

KEY = ["trial_id", "epoch", "split", "ood_set", "scorer"]
# What the tests train on unless they say otherwise: cmnist's two-class build, smaller and faster
# than the five-class `cmnist`; no test here depends on five classes. A parametrized name, so every
# sweep here also runs (and resumes) under the on-disk names `safe_name` makes of such a name.
BENCHMARK = "cmnist[classes=2]"


def _sweep_file(tmp_path, name="t", **over) -> Path:
    data = {
        "name": name,
        "output": str(tmp_path / "out"),
        "datasets": [{"benchmark": BENCHMARK}],
        "trial": {"epochs": 1, "batch_size": 64, "scorers": ["msp", "energy"], "eval_batch_size": 1024},
        "space": {"alpha": {"low": 0.01, "high": 10.0, "log": True}, "p_inv": {"low": 0.05, "high": 0.5}},
        "num_samples": 3,
        "objective": {"metric": "val/auroc", "scorer": "energy"},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 2},
        "final": {"seeds": [0, 1]},
    }
    for k, v in over.items():
        if k != "space" and isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ascood.cli.sweep", *map(str, args)],
                          capture_output=True, text=True, timeout=600, **kw)


def _results(tmp_path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "out" / "results")


def _study(tmp_path, name=f"t-{BENCHMARK}"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")


def test_sweep_end_to_end_with_final_seeds_and_summary(tmp_path):
    proc = _cli(_sweep_file(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _results(tmp_path)
    search, final = df[df["stage"] == "search"], df[df["stage"] == "final"]
    assert search["trial_id"].nunique() == 3 and final["trial_id"].nunique() == 2
    assert (df["status"] == "completed").all() and (df["sweep"] == "t").all()
    assert not df.duplicated(KEY).any()
    assert sorted(final.drop_duplicates("trial_id")["seed"]) == [0, 1]
    study = _study(tmp_path)
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.COMPLETE) == 3
    # the best search trial's configuration is what the final stage re-trained
    best = max(study.trials, key=lambda t: t.value)
    cfg = json.loads(final["config_json"].iloc[0])
    assert cfg["alpha_max"] == pytest.approx(best.params["alpha"]) and cfg["p_inv"] == pytest.approx(best.params["p_inv"])
    assert "best per dataset" in proc.stdout and BENCHMARK in proc.stdout  # (not read as Rich markup)
    summary = _cli("summary", tmp_path / "out", "--json")
    assert summary.returncode == 0, summary.stderr
    [s] = json.loads(summary.stdout)
    assert s["final_seeds"] == 2 and s["best"]["objective"] == pytest.approx(best.value)
    assert set(s["final"]) >= {"auroc", "fpr95"}
    # an existing output made from another sweep file is refused; --fresh starts anew
    other = _sweep_file(tmp_path, name="t", num_samples=2)
    refused = _cli(other)
    assert refused.returncode == 2 and "different sweep file" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_diverging_trial_fails_alone_and_optuna_is_told_fail(tmp_path):
    path = _sweep_file(
        tmp_path,
        space={"lr": {"choices": [0.05, 1.0e30]}},
        algorithm={"name": "grid"},
        trial={"epochs": 2, "batch_size": 64, "scorers": ["msp", "energy"]},
        final={"seeds": [3]},
    )
    proc = _cli(path, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _results(tmp_path)
    search = df[df["stage"] == "search"]
    by_lr = search.groupby("lr")["status"].agg(set).to_dict()
    assert by_lr == {0.05: {"completed"}, 1e30: {"failed"}}
    reason = search.loc[search["lr"] == 1e30, "status_reason"].iloc[0]
    assert "nan" in reason
    states = sorted(t.state.name for t in _study(tmp_path).trials)
    assert states == ["COMPLETE", "FAIL"]
    final = df[df["stage"] == "final"]
    assert set(final["lr"]) == {0.05} and (final["status"] == "completed").all()


def test_trial_with_two_gloo_processes(tmp_path):
    path = _sweep_file(
        tmp_path, num_samples=1, final=None,
        resources={"processes_per_trial": 2, "cpus_per_process": 0.5, "max_concurrent_trials": 1},
    )
    proc = _cli(path, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _results(tmp_path)
    assert (df["status"] == "completed").all() and df["trial_id"].nunique() == 1
    from ascood.data import load_benchmark

    assert (df.loc[df["split"] == "test", "n_id"] == len(load_benchmark(BENCHMARK).test)).all()


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's whole session: the driver, its Ray daemons and trial workers."""
    stop_tree([proc.pid])


def _wait_for(cond, proc, timeout=300) -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, "the sweep ended before the test could interrupt it"
        assert time.time() - t0 < timeout, "timed out waiting for the sweep"
        time.sleep(0.5)


def _completed_trials(tmp_path) -> int:
    root = tmp_path / "out" / "results"
    if not root.exists():
        return 0
    n = 0
    for f in root.rglob("*.parquet"):
        with contextlib.suppress(Exception):  # a file being replaced right now
            n += (pd.read_parquet(f)["status"] == "completed").any()
    return n


def test_resume_after_the_driver_is_killed(tmp_path):
    """Also the regression test of a parametrized dataset name: Ray looked for the restored
    experiment's searcher state with `glob` under `OUT/ray/search-cmnist[classes=2]`, found none,
    and the resumed sweep ran on without it."""
    path = _sweep_file(tmp_path, num_samples=4, final=None,
                       trial={"epochs": 2, "batch_size": 64, "scorers": ["msp", "energy"]},
                       resources={"max_concurrent_trials": 1})
    proc = subprocess.Popen([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: _completed_trials(tmp_path) >= 1, proc)
    finally:
        _kill_tree(proc)
    before = _results(tmp_path)
    done_before = set(before.loc[before["status"] == "completed", "trial_id"])
    assert 1 <= len(done_before) < 4

    plain = _cli(path)
    assert plain.returncode == 2 and "--resume" in plain.stderr
    resumed = _cli(path, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = _results(tmp_path)
    assert df["trial_id"].nunique() == 4, "no trial lost, none added twice"
    assert not df.duplicated(KEY).any()
    assert (df["status"] == "completed").all()
    assert set(df.groupby("trial_id")["epoch"].agg(frozenset)) == {frozenset({1, 2})}
    after = df.set_index(KEY).loc[before[before["trial_id"].isin(done_before)].set_index(KEY).index]
    pd.testing.assert_series_equal(after["auroc"], before[before["trial_id"].isin(done_before)].set_index(KEY)["auroc"])
    states = [t.state for t in _study(tmp_path).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4


# The driver with a fault at one exact moment, dying as a SIGKILL would: when the DIE_AT_FIT-th
# Tune run is built (its tuner.pkl written) before Tune saves anything of it, or in
# the upload of Tune's DIE_IN_SAVE-th save of the run's state, inside its trials file, or (DIE_MIXED)
# in the first upload that has a new trial, after the trials file and before the search state.
_DIES = """
import json, os, shutil, sys
from pathlib import Path
import ray.cloudpickle as cloudpickle
from ray import tune
from ray.tune.execution.tune_controller import TuneController
fits, saves, fit, save = [0], [0], tune.Tuner.fit, TuneController.save_to_dir
def dying_fit(self):
    fits[0] += 1
    if fits[0] == int(os.environ.get("DIE_AT_FIT", 0)):
        os._exit(9)
    return fit(self)
def dying_save(self):
    save(self)
    saves[0] += 1
    self._storage.syncer.wait()  # an earlier upload has ended
    staging, dest = Path(self._storage.experiment_driver_staging_path), Path(self._storage.experiment_fs_path)
    trials = self.experiment_state_file_name
    if saves[0] == int(os.environ.get("DIE_IN_SAVE", 0)):  # its upload, killed in the trials file
        for f in (f for f in staging.iterdir() if f.is_file()):
            shutil.copyfile(f, dest / f.name)
        (dest / trials).write_bytes((dest / trials).read_bytes()[: (dest / trials).stat().st_size // 2])
        os._exit(9)
    search = dest / trials.replace("experiment_state", "search_gen_state")
    if os.environ.get("DIE_MIXED") and search.exists():  # killed after the trials file, before the search state
        made = len(json.loads((staging / trials).read_text())["trial_data"])
        if cloudpickle.loads(search.read_bytes())["counter"] < made:
            shutil.copyfile(staging / trials, dest / trials)
            os._exit(9)
tune.Tuner.fit, TuneController.save_to_dir = dying_fit, dying_save
from ascood.cli.sweep import main
sys.exit(main())
"""


def _dies(path: Path, *args: str, **env: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _DIES, str(path), "--no-progress", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **{k: str(v) for k, v in env.items()}})
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        _kill_tree(proc)  # the Ray daemons the dead driver left
    assert proc.returncode == 9, err[-3000:]


def _all_trained_once(tmp_path, search: int) -> None:
    df = _results(tmp_path)
    assert (df["status"] == "completed").all() and not df.duplicated(KEY).any()
    assert df[df["stage"] == "search"]["trial_id"].nunique() == search
    assert sorted(df[df["stage"] == "final"].drop_duplicates("trial_id")["seed"]) == [0, 1]
    states = [t.state for t in _study(tmp_path).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * search


@pytest.mark.slow
def test_resume_after_the_driver_dies_between_building_the_tune_run_and_its_first_save(tmp_path):
    """Regression: Tune keeps no param_space in tuner.pkl, and restored without a saved state it
    starts over with one sample: a run killed before its first save resumed with trials without
    their config (KeyError 'sweep'), then with one trial of two. Killed as the sweep's Tune run
    starts, twice (the second time in a resume), then resumed to the end."""
    path = _sweep_file(tmp_path, num_samples=2)
    ray_dir = tmp_path / "out" / "ray"
    for resume in ([], ["--resume"]):
        _dies(path, *resume, DIE_AT_FIT=1)
        assert [p.parent.name for p in ray_dir.glob("*/tuner.pkl")] == ["sweep"]
        assert not list(ray_dir.glob("*/experiment_state-*.json")), "killed before Tune saved anything"
    resumed = _cli(path, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _all_trained_once(tmp_path, search=2)
    events = [json.loads(x) for x in (tmp_path / "out" / "timeline.jsonl").read_text().splitlines()]
    started = [e["stage"].split(" · ")[1] for e in events if e["event"] == "trial_start"]
    assert sorted(started) == ["final", "final", "search", "search"], "each trial started once"


@pytest.mark.slow
@pytest.mark.parametrize("death", ["DIE_IN_SAVE", "DIE_MIXED"])
def test_resume_after_the_driver_dies_inside_a_save_of_the_run_state(tmp_path, death):
    """A newest saved state cut short, or uploaded in part (a trials file newer than the search
    state beside it), is set aside: Tune would start the stage over with one sample, or hand a
    trial out twice. The search resumes from the study and the results, trains nothing twice."""
    path = _sweep_file(tmp_path, num_samples=3, resources={"max_concurrent_trials": 1},
                       trial={"epochs": 2, "batch_size": 64, "scorers": ["msp", "energy"]})
    search_dir = tmp_path / "out" / "ray" / "sweep"
    _dies(path, **{death: 2 if death == "DIE_IN_SAVE" else 1})
    [cut] = search_dir.glob("experiment_state-*.json")
    told = [t for t in _study(tmp_path).trials if t.state.is_finished()]
    assert len(told) < 3, "the driver died with the search unfinished: its resume restores it"
    if death == "DIE_IN_SAVE":
        with pytest.raises(ValueError):
            json.loads(cut.read_text())
    resumed = _cli(path, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _all_trained_once(tmp_path, search=3)  # restored from the cut file, Tune ran one more trial, not two
    assert (search_dir / f".unusable-{cut.name}").exists() and not cut.exists()


def test_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path):
    path = _sweep_file(tmp_path, num_samples=1, final=None,
                       trial={"epochs": 3, "batch_size": 16, "scorers": ["msp", "energy"]})
    proc = subprocess.Popen([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        attempts = lambda: list((tmp_path / "out" / "trials").rglob("attempts.jsonl"))  # noqa: E731

        def epoch_one_checkpointed() -> bool:
            files = list((tmp_path / "out" / "results").rglob("*.parquet")) if (tmp_path / "out" / "results").exists() else []
            return bool(attempts()) and bool(files) and (pd.read_parquet(files[0])["epoch"] >= 1).any()

        _wait_for(epoch_one_checkpointed, proc)
        pid = json.loads(attempts()[0].read_text().splitlines()[0])["pid"]
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    assert proc.returncode == 0, err[-3000:]
    lines = [json.loads(x) for x in attempts()[0].read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["start_epoch"] >= 1, lines
    df = _results(tmp_path)
    assert not df.duplicated(KEY).any() and (df["status"] == "completed").all()
    assert set(df["epoch"]) == {1, 2, 3}


def test_asha_stopped_trials_are_marked_and_told_to_optuna_as_pruned(tmp_path):
    path = _sweep_file(tmp_path, num_samples=6, final=None,
                       trial={"epochs": 2, "batch_size": 64, "scorers": ["msp", "energy"]},
                       scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
                       resources={"max_concurrent_trials": 1})
    proc = _cli(path, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _results(tmp_path)
    per_trial = df.groupby("trial_id").agg(status=("status", "first"), last=("epoch", "max"))
    assert set(per_trial["status"]) <= {"completed", "stopped-early"}
    stopped = per_trial[per_trial["status"] == "stopped-early"]
    assert len(stopped) >= 1 and (stopped["last"] < 2).all()
    assert (per_trial.loc[per_trial["status"] == "completed", "last"] == 2).all()
    states = [t.state for t in _study(tmp_path).trials]
    pruned = [t for t in _study(tmp_path).trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(stopped)
    assert all(len(t.intermediate_values) >= 1 for t in pruned), "TPE sees where pruned trials stood"
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(per_trial) - len(stopped)


@pytest.mark.slow
def test_robust_stage_reuse_and_verdict_end_to_end(tmp_path):
    """The quickstart's stage structure (search, final, CE baseline, robust, transfer) on two
    datasets: every distinct run trained once, the robust study's gains in Optuna and Parquet, and
    a report that leads with a verdict, intervals and a tied set."""
    from ascood.gain import normalized_gain
    from ascood.sweep.objective import objective_value
    from ascood.sweep.spec import Objective

    path = _sweep_file(
        tmp_path, num_samples=2, final={"seeds": [0, 1]},
        datasets=[{"benchmark": "mnist6"}, {"benchmark": "mnist10"}],
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
        robust={"num_samples": 3, "trial": {"alpha_scale": "relative"},
                "space": {"alpha": {"low": 0.001, "high": 0.3, "log": True}, "p_inv": {"low": 0.05, "high": 0.5}}},
        transfer={"top_k": 1, "seeds": [0, 1], "defaults": True, "baseline": True, "max_seeds": 3},
    )
    proc = _cli(path, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _results(tmp_path)
    assert set(df["stage"]) == {"search", "final", "baseline", "robust", "transfer"}

    # Racing: a third seed only for the leader, those tied with it and CE, when any are tied.
    from ascood.verdict import CE, setting_id, transfer_rows, transfer_table, verdict

    rows = transfer_rows(df)
    objective = Objective(metric="val/auroc", scorer="energy")
    at_two = verdict(transfer_table(rows[rows["seed"] < 2], objective), metric="auroc")
    raced = set(rows.loc[rows["seed"] == 2, "setting"])
    assert raced == ({at_two.pick, *at_two.tied, CE} if at_two.tied else set())
    assert rows[rows["seed"] == 2].groupby("setting")["benchmark"].nunique().eq(2).all()
    files = df.drop_duplicates(["benchmark", "stage", "trial_id"])

    # Never the same run trained twice: one trained (not reused) trial per run id; each reuse
    # points at a completed original of the same run.
    trained = files[files["reused_from"].isna() & (files["status"] == "completed")]
    assert trained.groupby(["benchmark", "run_id"]).size().max() == 1  # (a run ASHA stopped is not reusable)
    for _, r in files[files["reused_from"].notna()].iterrows():
        original = pd.read_parquet(results_file(str(tmp_path / "out"), r["benchmark"], r["reused_from"]))
        assert set(original["run_id"]) == {r["run_id"]} and set(original["status"]) == {"completed"}
        assert original["reused_from"].isna().all()
    for benchmark in ("mnist6", "mnist10"):
        final = files[(files["stage"] == "final") & (files["benchmark"] == benchmark)]
        assert final.loc[final["seed"] == 0, "reused_from"].str.startswith("search-").all()  # the search's best run
        transfer = files[(files["stage"] == "transfer") & (files["benchmark"] == benchmark)]
        ce = transfer[transfer["method"] == "ce"]
        assert ce.loc[ce["seed"] == 0, "reused_from"].str.startswith("baseline-").all()
        assert transfer["reused_from"].str.startswith("robust-").sum() == 1  # the robust pick at the stage's seed
        relative = transfer[transfer["alpha_scale"] == "relative"]  # the robust pick: seeds 0, 1 (and 2 if raced)
        (label,) = {setting_id(r) for _, r in relative.iterrows()}
        assert sorted(relative["seed"]) == [0, 1] + ([2] if label in raced else [])
    for attempts in (tmp_path / "out" / "trials").rglob("attempts.jsonl"):
        assert len(attempts.read_text().splitlines()) == 1, attempts  # no trial trained again

    # The robust study: its objective is the worst gain, the per-dataset gains kept on each trial.
    study = _study(tmp_path, "t-robust")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.state.is_finished() for t in study.trials)
    # ... and every robust trial's files say what Optuna says: one stopped by ASHA after its first
    # dataset has a `stopped-early` record on the next (what a resume finds instead of training it)
    for t in study.trials:
        files_of = [results_file(str(tmp_path / "out"), b, f"robust-{t.number:04d}") for b in ("mnist6", "mnist10")]
        statuses = [set(pd.read_parquet(f)["status"]) for f in files_of if Path(f).exists()]
        expected = {"COMPLETE": [{"completed"}] * 2, "PRUNED": [{"completed"}, {"stopped-early"}]}[t.state.name]
        assert statuses == expected, (t.number, t.state, statuses)
    robust = df[(df["stage"] == "robust") & (df["status"] == "completed")]
    for t in complete:
        gains = {k.split("/", 1)[1]: v for k, v in t.user_attrs.items() if k.startswith("gain/")}
        assert set(gains) == {"mnist6", "mnist10"} and t.value == pytest.approx(min(gains.values()))
        for benchmark, g in gains.items():
            rows = robust[(robust["benchmark"] == benchmark) & np.isclose(robust["alpha_max"], t.params["alpha"])
                          & np.isclose(robust["p_inv"], t.params["p_inv"])]
            assert rows["norm_gain"].iloc[0] == pytest.approx(g)
            ce = df[(df["stage"] == "baseline") & (df["benchmark"] == benchmark)]
            last = lambda x: x[x["epoch"] == x["epoch"].max()]  # noqa: E731
            expected = normalized_gain(objective_value(last(rows), objective), objective_value(last(ce), objective),
                                       metric="auroc")
            assert g == pytest.approx(expected)
            assert rows["alpha_eff"].notna().all() and (rows["alpha_eff"] > 0).all()

    report = _cli("report", tmp_path / "out", "--bootstrap", "999")
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.lstrip().startswith("Pick: S"), report.stdout[:500]
    out = tmp_path / "out" / "report"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["criterion"] == "gain" and summary["seeds"] == ([0, 1, 2] if raced else [0, 1])
    assert summary["robust_pick_label"].startswith("S") and isinstance(summary["tied_with_pick"], list)
    pick = next(c for c in summary["candidates"] if c["setting"] == summary["robust_pick"])
    assert pick["worst_gain_low"] <= pick["worst_gain"] <= pick["worst_gain_high"]
    html = (out / "report.html").read_text()
    assert html.index('class="verdict"') < html.index("<table")
    assert html.count("data:image/png;base64,") == 4
    import matplotlib.image as mpimg

    for name in ("gains", "joint", "marginal", "pareto"):
        img = mpimg.imread(out / f"{name}.png")
        assert img.shape[0] > 100 and img[..., :3].std() > 0.05, f"{name}.png looks empty"
    picks = pd.read_csv(out / "picks.csv")
    assert picks["robust_pick"].sum() == 1 and set(picks["label"]) >= {"S1", "CE"}
