"""Per-label recalibration and decision thresholds, fitted on the validation split and stored in the checkpoint.

Recalibration: temperature scaling (one scalar per label, fitted by minimising the validation log-loss) or isotonic
regression (scikit-learn). Thresholds on the recalibrated probabilities: Youden's J (default) or the highest
threshold reaching a target sensitivity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_curve

__all__ = ["LabelCalibration", "fit_calibration", "apply_calibration", "choose_threshold"]


@dataclass
class LabelCalibration:
    """Calibration of one label.

    Args:
        method: ``temperature``, ``isotonic`` or ``none``.
        temperature: logit divisor for ``temperature``.
        isotonic_x: isotonic breakpoints (uncalibrated probabilities) for ``isotonic``.
        isotonic_y: calibrated probabilities at those breakpoints.
        threshold: decision threshold on the calibrated probability.
        rule: how the threshold was chosen.
        n_val: validation samples with a known label.
    """

    method: str = "none"
    temperature: float = 1.0
    isotonic_x: list[float] = field(default_factory=list)
    isotonic_y: list[float] = field(default_factory=list)
    threshold: float = 0.5
    rule: str = "default"
    n_val: int = 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def apply_calibration(logits: np.ndarray, cal: LabelCalibration) -> np.ndarray:
    """Calibrated probabilities for one label's logits (N,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if cal.method == "temperature":
        return _sigmoid(logits / cal.temperature)
    if cal.method == "isotonic" and cal.isotonic_x:
        return np.interp(_sigmoid(logits), cal.isotonic_x, cal.isotonic_y)
    return _sigmoid(logits)


def _fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    def nll(log_t: float) -> float:
        p = np.clip(_sigmoid(logits / np.exp(log_t)), 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(res.x))


def choose_threshold(y_true: np.ndarray, y_score: np.ndarray, *, rule: str = "youden",
                     target_sensitivity: float = 0.9) -> float:
    """Decision threshold from validation scores (both classes needed; else 0.5)."""
    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y_true, y_score)
    thr = np.clip(thr, 0.0, 1.0)
    if rule == "sensitivity":
        ok = np.where(tpr >= target_sensitivity)[0]
        return float(thr[ok[0]]) if len(ok) else float(thr[-1])
    best = int(np.argmax(tpr - fpr))
    return float(thr[best])


def fit_calibration(logits: np.ndarray, y_true: np.ndarray, *, method: str = "temperature",
                    rule: str = "youden", target_sensitivity: float = 0.9) -> list[LabelCalibration]:
    """Fit per-label calibration + threshold.

    Args:
        logits: (N, C) validation logits.
        y_true: (N, C) labels with NaN for unknown.
        method: ``temperature``, ``isotonic`` or ``none``.
        rule: ``youden`` or ``sensitivity``.
        target_sensitivity: for ``rule="sensitivity"``.
    """
    out = []
    for c in range(logits.shape[1]):
        known = ~np.isnan(y_true[:, c])
        x, y = logits[known, c].astype(np.float64), y_true[known, c]
        cal = LabelCalibration(method="none", n_val=int(known.sum()))
        if known.sum() >= 10 and len(np.unique(y)) == 2:
            if method == "temperature":
                cal.method, cal.temperature = "temperature", _fit_temperature(x, y)
            elif method == "isotonic":
                iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(_sigmoid(x), y)
                cal.method = "isotonic"
                cal.isotonic_x = [float(v) for v in iso.X_thresholds_]
                cal.isotonic_y = [float(v) for v in iso.y_thresholds_]
            probs = apply_calibration(x, cal)
            cal.threshold = choose_threshold(y, probs, rule=rule, target_sensitivity=target_sensitivity)
            cal.rule = rule if rule == "youden" else f"sensitivity>={target_sensitivity}"
        out.append(cal)
    return out
