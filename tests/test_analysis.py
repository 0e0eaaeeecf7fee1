"""Cross-setting pick on synthetic tables with a known answer."""

import pandas as pd
import pytest

from analysis.load import AnalysisInputError, load_sweeps
from analysis.robust import bootstrap_wins, pick, regret_table


def _table(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"setting": s, "dataset": d, "seed": i, "value": v} for (s, d), vs in values.items() for i, v in enumerate(vs)]
    )


# A: best on two datasets but collapses on the third; B: never best, never bad.
VALUES = {
    ("A", "cmnist"): [95, 96, 97], ("A", "mnist6"): [98, 98, 98], ("A", "mnist10"): [70, 71, 69],
    ("B", "cmnist"): [90, 91, 89], ("B", "mnist6"): [94, 95, 93], ("B", "mnist10"): [95, 94, 96],
    ("C", "cmnist"): [80, 80, 80], ("C", "mnist6"): [90, 90, 90], ("C", "mnist10"): [97, 98, 96],
}


def test_robust_pick_avoids_a_setting_that_collapses_on_one_dataset():
    p = pick(_table(VALUES), "max")
    assert p.robust == "B"
    assert p.regret.loc["B", "worst"] == pytest.approx(6.0)  # cmnist: 96 − 90
    assert p.regret.loc["A", "mnist10"] == pytest.approx(27.0)  # 97 − 70


def test_best_mean_can_differ_from_robust():
    values = {
        ("A", "x"): [100], ("A", "y"): [100], ("A", "z"): [88],  # mean regret 4, worst 12
        ("B", "x"): [94], ("B", "y"): [93], ("B", "z"): [94],  # mean regret ~6.3, worst 7
        ("C", "x"): [90], ("C", "y"): [90], ("C", "z"): [100],  # the z champion
    }
    p = pick(_table(values), "max")
    assert p.robust == "B" and p.best_mean == "A"


def test_minimised_metrics_and_regret_signs():
    values = {("A", "x"): [10], ("A", "y"): [50], ("B", "x"): [20], ("B", "y"): [25]}
    regret = regret_table(_table(values), "min")
    assert regret.loc["A", "y"] == 25 and regret.loc["B", "x"] == 10
    assert pick(_table(values), "min").robust == "B"


def test_bootstrap_wins_are_frequencies_and_favour_the_clear_pick():
    wins = bootstrap_wins(_table(VALUES), "max", n=200)
    assert wins.sum() == pytest.approx(1.0)
    assert wins.index[0] == "B" and wins["B"] > 0.9


def test_every_setting_must_be_measured_everywhere():
    values = dict(VALUES)
    del values[("C", "mnist10")]
    with pytest.raises(ValueError, match="missing on"):
        pick(_table(values), "max")


def test_loading_refuses_missing_results(tmp_path):
    with pytest.raises(AnalysisInputError, match="no sweep results"):
        load_sweeps([tmp_path])


def _rows(value_of, test_value_of=None) -> pd.DataFrame:
    """Transfer-stage result rows in the results schema's long format (val and test splits)."""
    rows = []
    settings = {"A": 1.0, "B": 10.0}
    for s, alpha in settings.items():
        for d in ("cmnist", "mnist6"):
            for seed in (0, 1):
                for split in ("val", "test"):
                    v = value_of(s, d, seed) if split == "val" else (test_value_of or value_of)(s, d, seed)
                    rows.append({
                        "stage": "transfer", "status": "completed", "epoch": 2, "trial_id": f"{s}{d}{seed}",
                        "benchmark": d, "method": "ascood", "seed": seed, "split": split, "scorer": "energy",
                        "ood_set": "x", "ood_group": "far", "auroc": v, "fpr95": 100 - v, "aupr_in": v,
                        "aupr_out": v, "id_accuracy": 90.0, "alpha_max": alpha, "alpha_min": alpha, "p_inv": 0.1,
                        "lam": 1.0, "sigma": 0.5, "ood_type": "gradient", "lr": 0.05, "alpha_scale": "absolute",
                    })
    return pd.DataFrame(rows)


def test_test_metrics_never_change_the_pick():
    from analysis.report import transfer_rows, transfer_table
    from ascood.sweep.spec import Objective

    objective = Objective(metric="val/auroc", scorer="energy")
    val = {("A", "cmnist"): 90, ("A", "mnist6"): 60, ("B", "cmnist"): 85, ("B", "mnist6"): 80}
    base = _rows(lambda s, d, seed: val[(s, d)] + seed)
    flipped = _rows(lambda s, d, seed: val[(s, d)] + seed, test_value_of=lambda s, d, seed: 100 - val[(s, d)])
    p1 = pick(transfer_table(transfer_rows(base), objective), "max")
    p2 = pick(transfer_table(transfer_rows(flipped), objective), "max")
    assert p1.robust == p2.robust and p1.robust.startswith("alpha_max=10 ")
    pd.testing.assert_frame_equal(p1.regret, p2.regret)


def test_mixed_schema_is_a_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "results").mkdir()
    pq.write_table(pa.table({"schema_version": [99], "run_id": ["r"]}), tmp_path / "results" / "x.parquet")
    with pytest.raises(AnalysisInputError, match="schema version"):
        load_sweeps([tmp_path])
    pq.write_table(pa.table({"schema_version": pa.array([1], pa.int32()), "run_id": ["r"]}), tmp_path / "results" / "x.parquet")
    with pytest.raises(AnalysisInputError, match="lack column"):
        load_sweeps([tmp_path])
