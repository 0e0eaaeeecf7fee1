"""Baseline methods in a sweep: the comparison stage, reuse across stages, the summary and the report."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from test_sweep import BENCHMARK, _cli, _results, _study, _sweep_file

from ascood.comparison import ASCOOD_PICK, method_comparison, paired_interval
from ascood.sweep.spec import Objective, SweepFileError, load_sweep


@pytest.mark.slow
def test_baselines_train_with_the_final_seeds_are_reused_across_stages_and_reported(tmp_path):
    path = _sweep_file(
        tmp_path, num_samples=2, final={"seeds": [0, 1]},
        baselines=["ce", "oe", "logitnorm", {"mixoe": {"mixoe_op": "mixup"}}], outliers="embedded",
        transfer={"top_k": 1, "seeds": [0, 1], "defaults": False, "baseline": True},
    )
    proc = _cli(path, "--no-progress", env={**os.environ, "COLUMNS": "200"})  # Rich's width off a terminal
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _results(tmp_path)
    assert (df["status"] == "completed").all()
    runs = df[df["stage"] == "comparison"].drop_duplicates("trial_id")
    assert sorted(zip(runs["method"], runs["seed"], strict=True)) == [
        (m, s) for m in ("ce", "logitnorm", "mixoe", "oe") for s in (0, 1)]
    assert json.loads(runs[runs["method"] == "oe"]["method_options"].iloc[0]) == {
        "oe_batch_factor": 2, "oe_lambda": 0.5, "outliers": "embedded"}
    assert set(runs[runs["method"] == "mixoe"]["method_options"].map(lambda o: json.loads(o)["mixoe_op"])) == {"mixup"}
    assert set(runs["feature_norm"]) == {"none"}, "each baseline its own head, not the sweep's zscore"
    # the transfer stage's CE runs are the comparison's, reused, not trained again
    ce = df[(df["stage"] == "transfer") & (df["method"] == "ce")].drop_duplicates("trial_id")
    assert len(ce) == 2 and ce["reused_from"].str.startswith("comparison-").all()
    ce_ids = set(runs[runs["method"] == "ce"]["run_id"])
    assert set(ce["run_id"]) == ce_ids
    # the summary and the report show the comparison
    assert "ASCOOD against the baseline methods" in proc.stdout and "mixoe (op=mixup)" in proc.stdout
    report = _cli("report", tmp_path / "out", "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "report" / "report.html").read_text()
    assert "ASCOOD against the baseline methods" in page and "Δ AUROC [95%]" in page
    table = pd.read_csv(tmp_path / "report" / "comparison.csv")
    mine = table[(table["benchmark"] == BENCHMARK) & (table["group"] == "all")].set_index("method")
    assert list(mine.index) == [ASCOOD_PICK, "ce", "logitnorm", "mixoe (op=mixup)", "oe"]
    assert (mine["seeds"] == 2).all() and (mine.drop(ASCOOD_PICK)["paired_seeds"] == 2).all()
    # Δ is the paired seed-mean difference of the test rows, recomputed here from the Parquet rows
    test = df[(df["split"] == "test") & (df["scorer"] == "energy")]
    pick = test[test["stage"] == "final"].groupby("seed")["auroc"].mean()
    oe = test[(test["stage"] == "comparison") & (test["method"] == "oe")].groupby("seed")["auroc"].mean()
    assert mine.loc["oe", "delta_auroc"] == pytest.approx((oe - pick).mean())
    assert mine.loc[ASCOOD_PICK, "auroc"] == pytest.approx(pick.mean())
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["method_comparison"]


def test_paired_interval_is_scipys_t_interval_of_the_differences():
    a, b = np.array([90.0, 92.0, 91.5]), np.array([88.0, 91.0, 87.0])
    point, low, high = paired_interval(a, b)
    d = a - b
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert point == pytest.approx(d.mean()) and (low, high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert np.isnan(paired_interval(a[:1], b[:1])[1])
    assert paired_interval(a, a - 1.0) == (1.0, 1.0, 1.0)


def test_method_comparison_pairs_seeds_and_means_groups_over_their_sets():
    rows = []
    for stage, method, shift in (("final", "ascood", 0.0), ("comparison", "ce", -5.0)):
        for seed in (0, 1, 2):
            for ood_set, group, base in (("a", "near", 70.0), ("b", "far", 90.0), ("c", "far", 80.0)):
                if method == "ce" and seed == 2:
                    continue  # CE misses a seed: paired on the two both have
                rows.append(dict(stage=stage, method=method, method_options="{}", benchmark="d", split="test",
                                 scorer="energy", status="completed", epoch=3, trial_id=f"{stage}{seed}", seed=seed,
                                 ood_set=ood_set, ood_group=group, auroc=base + shift + seed, fpr95=50 - shift,
                                 id_accuracy=99.0))
    table = method_comparison(pd.DataFrame(rows), Objective(scorer="energy"))
    by = table.set_index(["group", "method"])
    assert by.loc[("far", ASCOOD_PICK), "auroc"] == pytest.approx(85 + 1)  # (90 + 80)/2, seeds 0..2
    assert by.loc[("all", ASCOOD_PICK), "auroc"] == pytest.approx(80 + 1)
    assert by.loc[("all", "ce"), "seeds"] == 2 and by.loc[("all", "ce"), "paired_seeds"] == 2
    assert by.loc[("near", "ce"), "delta_auroc"] == pytest.approx(-5.0)
    assert by.loc[("near", "ce"), "delta_fpr95"] == pytest.approx(5.0)


@pytest.mark.parametrize("over, expected", [
    (dict(baselines=["oe"]), "baselines[0] (oe) on cmnist[classes=2]: outliers: baseline oe trains on external outliers"),
    (dict(baselines=["ce"], outliers="embedded"), "outliers: only the oe and mixoe baselines"),
    (dict(baselines=["resnet-ce"]), "baselines[0].method: "),
    (dict(baselines=["ascood"]), "ascood is what the sweep searches"),
    (dict(baselines=[{"ce": {"oe_lambda": 1.0}}]), "baselines[0] (ce) on cmnist[classes=2]: oe-lambda: an option of method oe"),
    (dict(baselines=["ce", "ce"]), "each method (with its options) may appear once"),
    (dict(baselines=["oe"], outliers_root="/data"), "outliers_root: the image root of `outliers`"),
])
def test_bad_baselines_are_one_line_errors_naming_the_field(tmp_path, over, expected):
    with pytest.raises(SweepFileError) as err:
        load_sweep(_sweep_file(tmp_path, **over))
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_missing_outlier_folder_stops_the_sweep_before_anything_is_created(tmp_path):
    path = _sweep_file(tmp_path, baselines=["oe"], outliers=str(tmp_path / "nowhere"))
    proc = _cli(path, "--no-progress")
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"outliers {tmp_path / 'nowhere'}: no such file or folder" in err[0], err
    assert not (tmp_path / "out").exists()


def test_real_sweep_files_name_every_baseline_and_the_quickstart_at_least_three():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "sweeps"
    for name in ("spurious", "finegrained", "conventional"):
        spec, _ = load_sweep(root / f"{name}.yaml")
        assert {b.method for b in spec.baselines} == {"ce", "oe", "logitnorm", "t2fnorm", "vos", "mixoe"}, name
    quick, _ = load_sweep(root / "quickstart.yaml")
    assert {"ce", "oe", "logitnorm"} <= {b.method for b in quick.baselines} and quick.outliers == "embedded"
    assert yaml.safe_load((root / "quickstart.yaml").read_text())["baselines"]


@pytest.mark.parametrize("space, expected", [
    ({"oe_lambda": {"low": 0.1, "high": 1.0}}, "space.oe_lambda: an option of method oe, and the trials on cmnist[classes=2] "
                                               "train method ascood"),
    ({"oe_batch_factor": {"low": 1.0, "high": 2.5}}, "space.oe_batch_factor: oe_batch_factor takes integers"),
    ({"mixoe_op": {"choices": ["mixup", "blend"]}}, "space.mixoe_op: "),
    ({"vos_start": {"low": 0.0, "high": 1.5}}, "space.vos_start: "),
])
def test_a_searched_method_option_is_checked_against_its_method_and_domain(tmp_path, space, expected):
    with pytest.raises(SweepFileError) as err:
        load_sweep(_sweep_file(tmp_path, space=space))
    assert expected in str(err.value), str(err.value)


def test_a_baseline_methods_options_are_searched_like_ascoods(tmp_path):
    """`trial.method: oe` and a space over its options: Optuna samples them (integers as integers),
    every trial trains with its sample, and the results record the options used."""
    path = _sweep_file(tmp_path, trial={"method": "oe", "outliers": "embedded"}, final=None, num_samples=2,
                       space={"oe_lambda": {"low": 0.1, "high": 2.0, "log": True},
                              "oe_batch_factor": {"low": 1, "high": 3}})
    proc = _cli(path, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _results(tmp_path).drop_duplicates("trial_id")
    trials = [t for t in _study(tmp_path).trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2 == len(df) and (df["method"] == "oe").all()
    used = sorted((o["oe_lambda"], o["oe_batch_factor"]) for o in df["method_options"].map(json.loads))
    sampled = sorted((t.params["oe_lambda"], t.params["oe_batch_factor"]) for t in trials)
    np.testing.assert_allclose(np.array(used), np.array(sampled), rtol=1e-12)
    assert all(isinstance(b, int) for _, b in sampled)


def test_baselines_without_a_final_stage_are_refused(tmp_path):
    with pytest.raises(SweepFileError, match="baselines: they are compared with the final stage's runs"):
        load_sweep(_sweep_file(tmp_path, baselines=["ce"], final=None))


def test_the_robust_stage_searches_ascood_settings_only(tmp_path):
    path = _sweep_file(tmp_path, datasets=[{"benchmark": BENCHMARK}, {"benchmark": "mnist6"}],
                       robust={"num_samples": 2, "space": {"oe_lambda": {"low": 0.1, "high": 1.0}}})
    with pytest.raises(SweepFileError, match=r"robust\.space\.oe_lambda: an option of method oe"):
        load_sweep(path)
