import numpy as np
import pytest

from humane.modeling.evaluation import binary_metrics, calibration_bins, expected_calibration_error, roc_points


def test_ece_matches_hand_computation():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.7, 0.6])
    # bins of width 0.5: [0.1, 0.2] -> mean 0.15, rate 0; [0.6..0.9] -> mean 0.75, rate 0.75
    assert expected_calibration_error(y, p, 2) == pytest.approx((2 * 0.15 + 4 * 0.0) / 6)
    bins = calibration_bins(y, p, 2)
    assert [b.count for b in bins] == [2, 4]


def test_probability_one_falls_in_the_last_bin():
    bins = calibration_bins(np.array([1, 1]), np.array([1.0, 0.95]), 10)
    assert len(bins) == 1 and bins[0].upper == 1.0


def test_binary_metrics_on_a_tiny_case():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = binary_metrics(y, p, threshold=0.5, n_bins=10)
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5
    assert m["roc_auc"] == 0.75
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))


def test_constant_prediction_keeps_finite_log_loss():
    m = binary_metrics(np.array([0, 1]), np.array([1.0, 1.0]), 0.5, 10)
    assert np.isfinite(m["log_loss"])


def test_roc_points_are_thinned_and_span_the_curve():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    pts = roc_points(y, rng.random(5000), max_points=50)
    assert len(pts) <= 50 and pts[0] == {"fpr": 0.0, "tpr": 0.0} and pts[-1] == {"fpr": 1.0, "tpr": 1.0}
