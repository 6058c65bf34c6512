"""Calibration and thresholds fitted on validation scores."""

from __future__ import annotations

import numpy as np

from clinmm.calibration import LabelCalibration, apply_calibration, choose_threshold, fit_calibration


def test_temperature_shrinks_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000).astype(float)
    logits = (2 * y - 1) * 1.0 + rng.normal(0, 1.0, 2000)
    overconfident = logits * 5
    (cal,) = fit_calibration(overconfident[:, None], y[:, None], method="temperature")
    # With class-conditional N(±1, 1) scores the true log-odds are 2·logit, so 5·logit needs T ≈ 5 / 2.
    assert cal.method == "temperature" and 2.1 < cal.temperature < 2.9
    p = apply_calibration(overconfident, cal)
    # calibrated: mean predicted ≈ observed rate in the top decile
    top = p > np.quantile(p, 0.9)
    assert abs(p[top].mean() - y[top].mean()) < 0.05


def test_isotonic_and_unknown_labels() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500).astype(float)
    logits = np.c_[y + rng.normal(0, 1, 500), rng.normal(0, 1, 500)]
    labels = np.c_[y, np.full(500, np.nan)]  # second label entirely unknown
    cals = fit_calibration(logits, labels, method="isotonic")
    assert cals[0].method == "isotonic" and cals[0].isotonic_x
    assert cals[1].method == "none" and cals[1].n_val == 0 and cals[1].threshold == 0.5
    probs = apply_calibration(logits[:, 0], cals[0])
    assert probs.min() >= 0 and probs.max() <= 1


def test_threshold_rules() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert choose_threshold(y, s, rule="youden") == 0.7
    assert choose_threshold(y, s, rule="sensitivity", target_sensitivity=1.0) == 0.4
    assert choose_threshold(np.ones(4), s[:4]) == 0.5
    assert apply_calibration(np.array([0.0]), LabelCalibration())[0] == 0.5
