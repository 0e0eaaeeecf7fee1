"""After a real sweep, the tools researchers watch show it: TensorBoard (one run per trial), MLflow
(one experiment per sweep, one run per trial with its tags, parameters, curves and Parquet file),
the W&B offline run directories, and optuna-dashboard's HTTP API (started on 127.0.0.1 with the
README's command) over the sweep's optuna.db."""

import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import requests
from conftest import free_port, stop_tree, wandb_history
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ascood.results import read_results
from ascood.tracking import TrackedRun, wandb_id

DATASET = "cmnist[classes=2]"


@pytest.mark.slow
def test_tensorboard_mlflow_and_wandb_hold_every_trained_trial(finished_sweep):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = finished_sweep
    files = sorted((out / "results").rglob("*.parquet"))
    keys = {}
    for f in files:
        rows = read_results(f)
        if rows["reused_from"].isna().all():
            keys[f"{f.parent.name}/{f.stem}"] = rows
    assert {k.split("/")[1].split("-")[0] for k in keys} >= {"search", "final", "comparison"}
    # TensorBoard: a run directory per trained trial, every evaluated epoch once
    for name, rows in keys.items():
        acc = EventAccumulator(str(out / "tb" / name))
        acc.Reload()
        val = rows[(rows["split"] == "val") & (rows["scorer"] == "energy")]
        logged = [(e.step, e.value) for e in acc.Scalars("val/energy/all/auroc")]
        assert [s for s, _ in logged] == sorted(val["epoch"].unique())
        assert logged[-1][1] == pytest.approx(val[val["epoch"] == val["epoch"].max()]["auroc"].mean(), rel=1e-6)
    assert not list((out / "ray").rglob("events.out.tfevents*"))  # Tune's own loggers are off
    # MLflow: one experiment named for the sweep, one run per trained trial
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(keys)
    for name, r in runs.items():
        stage = name.split("/")[1].split("-")[0]
        assert r.info.status == "FINISHED" and r.data.tags["stage"] == stage and r.data.tags["dataset"] == DATASET
        assert r.data.tags["trial"] == name.split("/")[1] and r.data.params["benchmark"] == DATASET
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/energy/all/auroc")] == [1]
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == [f"{name.split('/')[1]}.parquet"]
    # W&B: an offline run directory per trained trial, under the id derived from its name
    for name in keys:
        rid = wandb_id(TrackedRun(name=name, store=str(out), experiment="tiny"))
        [run_dir] = (out / "wandb" / "wandb").glob(f"offline-run-*-{rid}")
        run, history = wandb_history(run_dir / f"run-{rid}.wandb")
        assert run["name"] == name and run["group"] == DATASET and run["job_type"] == name.split("/")[1].split("-")[0]
        val = keys[name][(keys[name]["split"] == "val") & (keys[name]["scorer"] == "energy")]
        assert [h["_step"] for h in history] == [1]
        assert history[0]["val/energy/all/auroc"] == pytest.approx(val["auroc"].mean(), rel=1e-6)


@pytest.mark.slow
def test_optuna_dashboard_serves_the_sweeps_studies(finished_sweep):
    port = free_port()
    db = finished_sweep / "optuna.db"
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(dashboard), f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                studies = requests.get(f"{base}/api/studies", timeout=5).json()["study_summaries"]
                break
            except (requests.ConnectionError, KeyError, ValueError):
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("optuna-dashboard did not answer in 60 s")
        expected = {s.study_name: s for s in optuna.get_all_study_summaries(f"sqlite:///{db}")}
        assert {s["study_name"] for s in studies} == set(expected) == {f"tiny-{DATASET}"}
        for summary in studies:
            detail = requests.get(f"{base}/api/studies/{summary['study_id']}", timeout=30).json()
            study = optuna.load_study(study_name=summary["study_name"], storage=f"sqlite:///{db}")
            assert detail["directions"] == ["maximize"] == [d.name.lower() for d in study.directions]
            assert len(detail["trials"]) == len(study.trials) == 3
            for t, ours in zip(sorted(detail["trials"], key=lambda t: t["number"]), study.trials, strict=True):
                assert t["state"] == ours.state.name.capitalize() == "Complete"
                assert {p["name"] for p in t["params"]} == set(ours.params) == {"alpha", "p_inv"}
                assert t["values"] == [pytest.approx(ours.value)]
        listening = [c.laddr.ip for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"]
        assert listening and set(listening) == {"127.0.0.1"}
    finally:
        stop_tree([proc.pid], grace_s=5)
