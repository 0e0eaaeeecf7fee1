"""The normalized gain over CE on known tables."""

import numpy as np
import pytest

from ascood.gain import normalized_gain


@pytest.mark.parametrize(
    ("value", "ce", "expected"),
    [
        (90.0, 80.0, 0.5),  # half of CE's 20-point headroom closed
        (100.0, 80.0, 1.0),  # perfect
        (80.0, 80.0, 0.0),  # CE itself
        (70.0, 80.0, -0.5),  # worse than CE, same scale
        (99.95, 99.9, 0.05),  # headroom 0.1 floored at 1 point: 0.05 / 1
    ],
)
def test_auroc_like_gain(value, ce, expected):
    assert normalized_gain(value, ce, metric="auroc") == pytest.approx(expected)


def test_fpr_is_mirrored_lower_is_better():
    assert normalized_gain(20.0, 80.0, metric="fpr95") == pytest.approx(0.75)  # 60 of 80 points of headroom to 0
    assert normalized_gain(90.0, 80.0, metric="fpr95") == pytest.approx(-0.125)
    assert normalized_gain(0.2, 0.5, metric="fpr95") == pytest.approx(0.3)  # ce − best = 0.5, floored at 1


def test_arrays_broadcast_and_floor_is_a_parameter():
    v = np.array([[90.0, 95.0], [85.0, 80.0]])
    ce = np.array([80.0, 90.0])
    np.testing.assert_allclose(normalized_gain(v, ce, metric="aupr_in"), [[0.5, 0.5], [0.25, -1.0]])
    assert normalized_gain(99.5, 99.0, metric="auroc", floor=5.0) == pytest.approx(0.1)


def test_bad_metric_or_floor_is_refused():
    with pytest.raises(ValueError, match="metric"):
        normalized_gain(1.0, 2.0, metric="loss")
    with pytest.raises(ValueError, match="floor"):
        normalized_gain(1.0, 2.0, metric="auroc", floor=0.0)
