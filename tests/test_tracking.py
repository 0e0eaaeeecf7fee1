"""Tracking read back with each library's own reader: TensorBoard's event accumulator, MlflowClient on
the run's store, the W&B offline run directory; and a run interrupted after a committed epoch
continues its own tracked run, every epoch logged once."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wandb_history
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ascood.config import validate_config
from ascood.results import run_id_for
from ascood.tracking import TrackedRun, parse_tracking, wandb_id
from ascood.trial import run_trial

BENCH = "cmnist[classes=2]"


def _cfg(epochs=2):
    return validate_config({"benchmark": BENCH, "epochs": epochs, "batch_size": 64, "scorers": ["msp", "energy"],
                            "eval_batch_size": 1024})


class Interrupt(Exception):
    pass


def _tb_steps(path, tag):
    acc = EventAccumulator(str(path))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)], acc


def test_an_interrupted_run_continues_its_own_tracked_runs(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient

    cfg = _cfg()
    tracking = parse_tracking(["tensorboard", "mlflow", "wandb"])

    def stop_in_epoch_2(rows):
        if rows[0]["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_trial(cfg, tmp_path, tracking=tracking, check_rows=stop_in_epoch_2)
    result = run_trial(cfg, tmp_path, tracking=tracking)
    assert result.status == "completed"
    run = run_id_for(cfg)
    steps, acc = _tb_steps(tmp_path / "tb" / run, "train/loss")
    assert steps == [1, 2]
    assert set(acc.Tags()["scalars"]) >= {"train/ce", "train/kl", "train/lr", "train/alpha", "val/energy/all/auroc",
                                          "val/msp/spurious/auroc", "test/energy/all/fpr95", "val/id_accuracy"}
    val = {r["epoch"]: r for r in result.rows if r["split"] == "val" and r["scorer"] == "energy"}
    logged = dict((e.step, e.value) for e in acc.Scalars("val/energy/all/auroc"))
    mean2 = sum(r["auroc"] for r in result.rows if r["split"] == "val" and r["scorer"] == "energy" and r["epoch"] == 2)
    mean2 /= sum(1 for r in result.rows if r["split"] == "val" and r["scorer"] == "energy" and r["epoch"] == 2)
    assert logged[2] == pytest.approx(mean2, rel=1e-6) and set(logged) == set(val)
    assert acc.PluginTagToContent("hparams")  # the run's parameters in the HParams plugin

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [exp] = [e for e in client.search_experiments() if e.name == "ascood-train"]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_name == run
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert float(runs[0].data.params["epochs"]) == 2 and runs[0].data.params["benchmark"] == BENCH
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == ["results.parquet"]

    rid = wandb_id(TrackedRun(name=run, store=str(tmp_path), experiment="ascood-train"))
    offline = sorted((tmp_path / "wandb" / "wandb").glob(f"offline-run-*-{rid}"))
    assert len(offline) == 2  # two attempts, one W&B run id: `wandb sync` makes them one run
    first, second = (wandb_history(d / f"run-{rid}.wandb") for d in offline)
    assert first[0]["id"] == second[0]["id"] == rid and first[0]["name"] == run
    assert [h["_step"] for h in first[1]] == [1] and [h["_step"] for h in second[1]] == [2]
    assert second[1][0]["val/energy/all/auroc"] == pytest.approx(logged[2], rel=1e-6)


def test_train_cli_tracks_to_tensorboard_by_default_and_refuses_unknown_trackers(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ascood.cli.train", "--benchmark", BENCH, "--epochs", "1", "--batch-size", "64",
           "--scorers", "energy", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [run_dir] = (out / "tb").iterdir()
    steps, _ = _tb_steps(run_dir, "val/energy/all/auroc")
    assert steps == [1] and not (out / "mlflow.db").exists()
    bad = subprocess.run([*cmd, "--tracking", "tensorboard,neptune"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--tracking" in bad.stderr and "'neptune' is not a tracker" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_tracking_forms():
    assert parse_tracking("none").names == []
    assert parse_tracking(["mlflow"]).names == ["mlflow"]
    assert parse_tracking({"wandb": {"project": "p"}}).wandb.project == "p"
    assert parse_tracking("tensorboard,wandb").names == ["tensorboard", "wandb"]
    with pytest.raises(ValueError, match="not a tracker"):
        parse_tracking(["tensorbord"])


@pytest.mark.parametrize(("entry", "message"), [
    ("[tensorboard, neptune]", "tracking: 'neptune' is not a tracker"),
    ("{mlflow: {url: x}}", "tracking.mlflow.url: unknown key"),
])
def test_a_bad_tracking_entry_is_one_line_naming_it(tmp_path, entry, message):
    quickstart = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
    text = quickstart.read_text().replace("tracking: [tensorboard, mlflow]", f"tracking: {entry}")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
