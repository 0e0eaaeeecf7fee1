"""Cross-setting pick on synthetic tables with a known answer."""

import numpy as np
import pandas as pd
import pytest

from analysis.load import AnalysisInputError, load_sweeps
from analysis.robust import pick, regret_table
from ascood.verdict import CE, delta_to_ce, raced_verdict, verdict


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


def _seeded(effects: dict[str, float], ce: dict[str, float], seeds: int, *, shared: float, own: float, rng_seed=0):
    """Validation AUROC per (setting, dataset, seed): CE's value + the setting's effect, with noise
    shared by every setting at a seed (`shared`, what pairing removes) and each setting's own."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for d, base in ce.items():
        for s in range(seeds):
            common = rng.normal(0, shared)
            rows.append({"dataset": d, "setting": CE, "seed": s, "value": base + common})
            for name, effect in effects.items():
                rows.append({"dataset": d, "setting": name, "seed": s, "value": base + effect + common + rng.normal(0, own)})
    return pd.DataFrame(rows)


def test_clearly_separated_candidates_have_no_tied_set():
    v = verdict(_seeded({"A": 10.0, "B": 5.0}, {"x": 80.0, "y": 60.0}, 5, shared=0.5, own=0.1), metric="auroc")
    assert v.pick == "A" and v.criterion == "gain"
    assert v.tied == [] and v.separates
    row = v.table.set_index("setting").loc["A"]
    assert row["worst_gain"] == pytest.approx(10.0 / 40.0, abs=0.01)  # y: 10 of CE's 40 points of headroom
    assert row["worst_gain_low"] < row["worst_gain"] < row["worst_gain_high"]


def test_candidates_within_noise_are_tied_and_said_to_be():
    table = _seeded({"A": 5.0, "B": 5.0, "C": 5.0}, {"x": 80.0, "y": 70.0}, 4, shared=0.5, own=2.0)
    v = verdict(table, metric="auroc")
    assert set(v.tied) == {"A", "B", "C"} - {v.pick}
    assert not v.separates


def test_pairing_by_seed_separates_what_marginal_noise_hides():
    """B is A minus 1 point on every seed; the seeds themselves vary by ±10 points. Unpaired
    intervals overlap entirely; the paired difference does not cover 0."""
    rows = []
    rng = np.random.default_rng(1)
    for s in range(6):
        common = rng.normal(0, 10)
        for d in ("x", "y"):
            rows += [{"dataset": d, "setting": CE, "seed": s, "value": 50.0},
                     {"dataset": d, "setting": "A", "seed": s, "value": 70.0 + common},
                     {"dataset": d, "setting": "B", "seed": s, "value": 69.0 + common}]
    v = verdict(pd.DataFrame(rows), metric="auroc")
    t = v.table.set_index("setting")
    assert v.pick == "A" and "B" not in v.tied
    assert t.loc["B", "worst_gain_high"] > t.loc["A", "worst_gain_low"]  # marginal intervals overlap
    assert t.loc["B", "diff_low"] > 0


def test_one_seed_gives_no_interval_and_nothing_separates():
    v = verdict(_seeded({"A": 10.0, "B": 1.0}, {"x": 80.0, "y": 60.0}, 1, shared=0.0, own=0.0), metric="auroc")
    assert v.pick == "A" and set(v.tied) == {"B", CE} and not v.separates
    assert v.table["worst_gain_low"].isna().all()


def test_seeds_not_measured_everywhere_are_left_out():
    table = _seeded({"A": 10.0}, {"x": 80.0, "y": 60.0}, 3, shared=0.5, own=0.1)
    table = table[~((table["setting"] == "A") & (table["seed"] == 2) & (table["dataset"] == "y"))]
    v = verdict(table, metric="auroc")
    assert v.seeds == [0, 1] and v.dropped_seeds == [2]


def test_fpr_objective_is_mirrored_and_without_ce_regret_decides():
    rows = [{"dataset": d, "setting": s, "seed": i, "value": val + i}
            for d in ("x", "y") for i in range(3) for s, val in ((CE, 80.0), ("A", 20.0), ("B", 40.0))]
    v = verdict(pd.DataFrame(rows), metric="fpr95")
    assert v.pick == "A" and v.table.set_index("setting").loc["A", "worst_gain"] == pytest.approx(60 / 81, abs=0.02)
    no_ce = pd.DataFrame([r for r in rows if r["setting"] != CE])
    v = verdict(no_ce, metric="fpr95")
    assert v.criterion == "regret" and v.pick == "A" and v.table.set_index("setting").loc["B", "worst_regret"] == 20


def test_a_race_decides_among_its_finalists_at_all_their_seeds():
    table = _seeded({"A": 5.0, "B": 4.5, "C": 1.0}, {"x": 80.0, "y": 70.0}, 4, shared=0.5, own=0.3)
    table = table[(table["setting"] != "C") | (table["seed"] < 2)]  # C left the race after two seeds
    first, raced = raced_verdict(table, metric="auroc")
    assert first.seeds == [0, 1] and first.dropped_seeds == [2, 3]
    assert raced is not None and raced.seeds == [0, 1, 2, 3] and raced.eliminated == ("C",)
    assert set(raced.table["setting"]) == {"A", "B", CE} and raced.pick == "A"
    assert raced_verdict(table[table["setting"] != "C"], metric="auroc")[1] is None  # no race: one verdict


def test_delta_to_ce_is_the_paired_difference():
    d = delta_to_ce(_seeded({"A": 3.0}, {"x": 80.0}, 5, shared=5.0, own=0.0), "A").iloc[0]
    assert d["delta"] == pytest.approx(3.0) and d["delta_low"] == pytest.approx(3.0) and d["delta_high"] == pytest.approx(3.0)


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
    from ascood.sweep.spec import Objective
    from ascood.verdict import transfer_rows, transfer_table

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
