import numpy as np
import pytest
from sklearn import metrics as skm

from ascood.metrics import ood_metrics


def _reference(id_s, ood_s, convention):
    """OpenOOD v1.5's computation, through scikit-learn (an independent implementation)."""
    conf = np.r_[id_s, ood_s]
    is_ood = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))].astype(int)
    fpr, tpr, _ = skm.roc_curve(is_ood, -conf)
    if convention == "openood":
        fpr95 = fpr[np.argmax(tpr >= 0.95)]
    else:
        f2, t2, _ = skm.roc_curve(1 - is_ood, conf)
        fpr95 = f2[np.argmax(t2 >= 0.95)]
    p_in, r_in, _ = skm.precision_recall_curve(1 - is_ood, conf)
    p_out, r_out, _ = skm.precision_recall_curve(is_ood, -conf)
    return 100 * np.array([skm.auc(fpr, tpr), fpr95, skm.auc(r_in, p_in), skm.auc(r_out, p_out)])


@pytest.mark.parametrize("convention", ["openood", "legacy"])
def test_metrics_match_sklearn_on_random_scores_with_ties(convention):
    rng = np.random.default_rng(0)
    for _ in range(200):
        id_s = rng.integers(0, 15, rng.integers(2, 300)).astype(float)
        ood_s = rng.integers(0, 15, rng.integers(2, 300)).astype(float) - rng.integers(0, 6)
        m = ood_metrics(id_s, ood_s, fpr_convention=convention)
        got = np.array([m.auroc, m.fpr95, m.aupr_in, m.aupr_out])
        np.testing.assert_allclose(got, _reference(id_s, ood_s, convention), rtol=1e-10, atol=1e-10)


def test_metrics_match_sklearn_on_continuous_scores():
    rng = np.random.default_rng(1)
    id_s, ood_s = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 700)
    m = ood_metrics(id_s, ood_s)
    np.testing.assert_allclose([m.auroc, m.fpr95, m.aupr_in, m.aupr_out], _reference(id_s, ood_s, "openood"))


def test_conventions_differ_and_orientation_is_higher_is_id():
    rng = np.random.default_rng(2)
    id_s, ood_s = rng.normal(2.0, 1.0, 1000), rng.normal(0.0, 2.0, 1000)
    a = ood_metrics(id_s, ood_s, fpr_convention="openood")
    b = ood_metrics(id_s, ood_s, fpr_convention="legacy")
    assert a.auroc == b.auroc and a.fpr95 != b.fpr95
    perfect = ood_metrics([5.0, 6.0, 7.0], [1.0, 2.0])
    assert (perfect.auroc, perfect.fpr95, perfect.aupr_in, perfect.aupr_out) == (100.0, 0.0, 100.0, 100.0)
    assert ood_metrics([1.0, 2.0], [5.0, 6.0]).auroc == 0.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="fpr_convention"):
        ood_metrics([1.0], [0.0], fpr_convention="tpr")
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics([1.0, float("nan")], [0.0])
