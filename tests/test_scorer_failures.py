"""A scorer that raises, or scores some sample NaN or ±inf, fails alone: its rows say why, every
other scorer goes on; when it is the sweep's objective, the trial fails (FAIL in Optuna), not the sweep."""

import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from test_search import _data

from ascood.config import validate_config
from ascood.evaluate import Evaluator
from ascood.models import create_model
from ascood.results import RunLabels, make_rows, read_results, write_results
from ascood.scorers import MSP, Scorer
from ascood.train import make_accelerator
from ascood.trial import run_trial


class HalfNaN(Scorer):
    name = "half-nan"

    def postprocess(self, outputs):
        s = outputs.logits.max(dim=1).values.clone()
        s[::2] = float("nan")
        return s


class Degenerate(Scorer):
    name = "degenerate"

    def setup(self, train, head):
        raise np.linalg.LinAlgError("singular covariance")

    def postprocess(self, outputs):
        return outputs.logits[:, 0]


def test_failing_scorers_get_rows_with_the_reason_and_the_others_go_on(tmp_path):
    torch.manual_seed(0)
    data = _data()
    model = create_model("small_cnn", num_classes=3).eval()
    results, used = Evaluator(data, make_accelerator(), batch_size=64).evaluate(
        model, [MSP(), HalfNaN(), Degenerate()], search=False)
    for split in results:
        by = {s.scorer: s for s in split.sets}
        assert by["msp"].metrics is not None and by["msp"].error is None
        assert by["half-nan"].metrics is None and "are NaN or infinite" in by["half-nan"].error
        assert by["degenerate"].metrics is None and "LinAlgError: singular covariance" in by["degenerate"].error
    cfg = validate_config({"benchmark": "cmnist"})
    rows = make_rows(cfg, "toy", "conventional", False, "r", 1, results, used, searched=False, train_loss=None,
                     wall_time_s=None, labels=RunLabels())
    write_results(tmp_path / "r.parquet", rows)
    df = read_results(tmp_path / "r.parquet")
    ok, bad = df[df["scorer"] == "msp"], df[df["scorer"] != "msp"]
    assert ok["auroc"].notna().all() and ok["scorer_error"].isna().all()
    assert bad["auroc"].isna().all() and bad["scorer_error"].notna().all()


def test_a_training_run_with_a_nan_scorer_completes_with_the_others(tmp_path):
    cfg = validate_config(dict(benchmark="cmnist", epochs=1, batch_size=64, scorers="msp,odin", odin_temperature=1e-300))
    result = run_trial(cfg, tmp_path)
    assert result.status == "completed"
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert df.loc[df["scorer"] == "msp", "auroc"].notna().all()
    odin = df[df["scorer"] == "odin"]
    assert odin["auroc"].isna().all() and odin["scorer_error"].str.contains("NaN or infinite").all()


@pytest.mark.slow
def test_the_objective_scorer_failing_fails_the_trial_not_the_sweep(tmp_path):
    sweep = {
        "name": "nan", "output": str(tmp_path / "out"), "datasets": [{"benchmark": "cmnist"}],
        "trial": {"epochs": 1, "batch_size": 64, "scorers": ["msp", "odin"], "odin_temperature": 1e-300},
        "space": {"p_inv": {"low": 0.05, "high": 0.5}}, "num_samples": 1, "final": None,
        "objective": {"metric": "val/auroc", "scorer": "odin"},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 1},
    }
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(sweep))
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "out" / "results")
    assert (df["status"] == "failed").all()
    assert df["status_reason"].str.contains("objective's scorer failed").all()
    assert df.loc[df["scorer"] == "msp", "auroc"].notna().all(), "the other scorer's numbers are kept"
    study = optuna.load_study(study_name="nan-cmnist", storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
