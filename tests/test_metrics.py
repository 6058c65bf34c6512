"""Tests of clinmm.metrics: pinned toy values, equality with scikit-learn, bootstrap properties, DeLong vs R pROC."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from clinmm.metrics import (
    METRIC_NAMES,
    binary_metrics,
    bootstrap_metrics,
    calibration_slope_intercept,
    calibration_summary,
    delong_auc_ci,
    delong_roc_test,
    ece_score,
    patient_bootstrap_weights,
    rank_auroc,
    reliability_bins,
    weighted_average_precision,
    weighted_confusion,
)

# Toy set: 4 positives, 6 negatives; every score in its own 1/15-wide bin (hand-computed values below).
Y = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 0])
P = np.array([0.9, 0.82, 0.42, 0.72, 0.32, 0.22, 0.12, 0.62, 0.52, 0.37])
B = np.array([0.6, 0.9, 0.3, 0.5, 0.55, 0.1, 0.2, 0.8, 0.4, 0.35])


def test_binary_metrics_pinned_on_toy_set():
    m = binary_metrics(Y, P, threshold=0.5)
    # TP .9 .82 .62; FN .42; FP .72 .52; TN 4. AUROC 21/24; AP = (1 + 1 + 3/4 + 4/6) / 4.
    assert (m.tp, m.fp, m.tn, m.fn, m.n, m.n_pos) == (3, 2, 4, 1, 10, 4)
    assert m.auroc == pytest.approx(21 / 24, abs=1e-15)
    assert m.auprc == pytest.approx((1 + 1 + 0.75 + 4 / 6) / 4, abs=1e-15)
    assert m.sensitivity == pytest.approx(0.75)
    assert m.specificity == pytest.approx(4 / 6)
    assert m.ppv == pytest.approx(0.6)
    assert m.npv == pytest.approx(0.8)
    assert m.f1 == pytest.approx(6 / 9)


def test_calibration_pinned_on_toy_set():
    s = calibration_summary(Y, P)
    assert s.ece == pytest.approx(0.351, abs=1e-12)  # one study per bin: mean |y - p|
    assert s.brier == pytest.approx(0.16141, abs=1e-12)
    # R: coef(glm(y ~ qlogis(p), binomial))[2] and coef(glm(y ~ 1 + offset(qlogis(p)), binomial))[1]
    assert s.slope == pytest.approx(1.561755368547405, abs=1e-6)
    assert s.intercept == pytest.approx(-0.552186382245811, abs=1e-9)
    assert sum(s.bins.counts) == 10 and max(s.bins.counts) == 1 and len(s.bins.counts) == 15


def test_reliability_bins_match_sklearn_calibration_curve():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.clip(rng.beta(2, 3, 500), 0, 1)
    bins = reliability_bins(y, p, n_bins=15)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy="uniform")
    counts = np.asarray(bins.counts)
    np.testing.assert_allclose(np.asarray(bins.prob_true)[counts > 0], prob_true, atol=1e-12)
    np.testing.assert_allclose(np.asarray(bins.prob_pred)[counts > 0], prob_pred, atol=1e-12)
    expected = np.sum(counts[counts > 0] * np.abs(prob_true - prob_pred)) / counts.sum()
    assert ece_score(y, p) == pytest.approx(expected, abs=1e-12)


def test_perfectly_calibrated_slope_near_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.random(20000) < p).astype(int)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1.0, abs=0.08)
    assert intercept == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_auroc_ap_confusion_equal_sklearn_with_weights(seed):
    rng = np.random.default_rng(seed)
    n = 400
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.4 * y, 2)  # many ties
    w = rng.integers(0, 4, (6, n)).astype(float)
    auc = rank_auroc(y, s, w)
    ap = weighted_average_precision(y, s, w)
    conf = weighted_confusion(y, s, threshold=0.7, sample_weight=w)
    for r in range(w.shape[0]):
        assert abs(auc[r] - roc_auc_score(y, s, sample_weight=w[r])) < 1e-12
        assert abs(ap[r] - average_precision_score(y, s, sample_weight=w[r])) < 1e-12
        # the same replicate as an explicit resample (what the bootstrap means)
        idx = np.repeat(np.arange(n), w[r].astype(int))
        assert abs(auc[r] - roc_auc_score(y[idx], s[idx])) < 1e-12
        assert abs(ap[r] - average_precision_score(y[idx], s[idx])) < 1e-12
        pred = (s[idx] >= 0.7).astype(int)
        tn, fp, fn, tp = confusion_matrix(y[idx], pred).ravel()
        assert conf["sensitivity"][r] == pytest.approx(tp / (tp + fn), abs=1e-12)
        assert conf["specificity"][r] == pytest.approx(tn / (tn + fp), abs=1e-12)
        assert conf["ppv"][r] == pytest.approx(tp / (tp + fp), abs=1e-12)
        assert conf["npv"][r] == pytest.approx(tn / (tn + fn), abs=1e-12)
        assert conf["f1"][r] == pytest.approx(f1_score(y[idx], pred), abs=1e-12)
    assert abs(rank_auroc(y, s) - roc_auc_score(y, s)) < 1e-12
    assert isinstance(rank_auroc(y, s), float)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6), st.integers(0, 3)), min_size=2, max_size=40),
)
def test_weighted_metrics_equal_sklearn_property(data):
    """Any labels / heavily tied scores / integer weights: same AUROC and AP as scikit-learn."""
    y = np.array([d[0] for d in data])
    s = np.array([d[1] for d in data], dtype=float) / 6
    w = np.array([d[2] for d in data], dtype=float)
    if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
        assert np.isnan(rank_auroc(y, s, w[None, :])[0])
        return
    assert abs(rank_auroc(y, s, w) - roc_auc_score(y, s, sample_weight=w)) < 1e-12
    assert abs(weighted_average_precision(y, s, w) - average_precision_score(y, s, sample_weight=w)) < 1e-12


def test_rank_auroc_undefined_without_both_classes():
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.1, 0.2])
    out = rank_auroc(y, s, np.array([[1, 1, 0, 0], [1, 0, 1, 1]], dtype=float))
    assert np.isnan(out[0]) and out[1] == 1.0


def test_known_and_macro_auroc_skip_unknowns_and_undefined_labels():
    from clinmm.metrics import known_auroc, macro_auroc

    y = np.array([[0, 1, 1], [1, 1, np.nan], [np.nan, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=float)
    s = np.array([[0.1, 0.5, 0.9], [0.8, 0.2, 0.0], [0.99, 0.3, 0.2], [0.4, 0.9, 0.6], [0.6, 0.1, 0.1]])
    known = ~np.isnan(y[:, 0])
    assert known_auroc(y[:, 0], s[:, 0]) == pytest.approx(roc_auc_score(y[known, 0], s[known, 0]))
    assert math.isnan(known_auroc(y[:, 1], s[:, 1]))  # only positives
    mean, per = macro_auroc(y, s)
    assert math.isnan(per[1]) and per[2] == pytest.approx(1.0)
    assert mean == pytest.approx((per[0] + per[2]) / 2)


def test_patient_bootstrap_weights_resample_patients_within_strata():
    pid = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    strata = np.array([1, 1, 1, 0, 0, 0, 0, 0])  # a, b positive patients; c, d, e negative
    w = patient_bootstrap_weights(pid, strata, n_boot=500, rng=np.random.default_rng(0))
    assert w.shape == (500, 8)
    np.testing.assert_array_equal(w[:, 0], w[:, 1])  # both studies of patient a share a weight
    np.testing.assert_array_equal(w[:, 3], w[:, 5])
    # per replicate, exactly 2 positive-stratum and 3 negative-stratum patients are drawn
    np.testing.assert_array_equal(w[:, 0] + w[:, 2], 2)
    np.testing.assert_array_equal(w[:, 3] + w[:, 6] + w[:, 7], 3)
    again = patient_bootstrap_weights(pid, strata, n_boot=500, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(w, again)
    with pytest.raises(ValueError, match="same patient"):
        patient_bootstrap_weights(pid, np.array([1, 0, 1, 0, 0, 0, 0, 0]), n_boot=2, rng=np.random.default_rng(0))


def _toy_multilabel(n=300, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(float)
    y[rng.random((n, c)) < 0.1] = np.nan
    s = np.clip(rng.random((n, c)) * 0.7 + 0.3 * np.nan_to_num(y), 0, 1)
    pid = rng.integers(0, n // 2, n).astype(str)
    return y, s, pid


def test_bootstrap_metrics_points_equal_sklearn_and_cis_are_sane():
    y, s, pid = _toy_multilabel()
    th = np.array([0.5, 0.4, 0.6])
    res = bootstrap_metrics(y_true=y, y_score=s, thresholds=th, patient_ids=pid, labels=["a", "b", "c"],
                            n_boot=300, seed=1)
    for j, lab in enumerate("abc"):
        k = ~np.isnan(y[:, j])
        pm = binary_metrics(y[k, j], s[k, j], threshold=th[j])
        for m in METRIC_NAMES:
            ci = res.per_label[lab][m]
            assert ci.value == pytest.approx(getattr(pm, m), abs=1e-15)
            assert ci.lower <= ci.value <= ci.upper
            assert ci.upper - ci.lower > 0.005 and ci.n_valid == 300
    for m in METRIC_NAMES:
        assert res.macro[m].value == pytest.approx(np.mean([res.per_label[lab][m].value for lab in "abc"]))
        assert res.macro[m].lower <= res.macro[m].value <= res.macro[m].upper
    k = ~np.isnan(y)
    yt, ys = y[k].astype(int), s[k]
    assert res.micro["auroc"].value == pytest.approx(roc_auc_score(yt, ys), abs=1e-15)
    assert res.micro["auprc"].value == pytest.approx(average_precision_score(yt, ys), abs=1e-15)
    thr = np.broadcast_to(th, y.shape)[k]
    assert res.micro["f1"].value == pytest.approx(f1_score(yt, (ys >= thr).astype(int)), abs=1e-15)
    again = bootstrap_metrics(y_true=y, y_score=s, thresholds=th, patient_ids=pid, labels=["a", "b", "c"],
                              n_boot=300, seed=1)
    assert again.per_label["b"]["auroc"] == res.per_label["b"]["auroc"]
    # pinned intervals (seed 1): any change to the resampling scheme shows up here
    assert res.per_label["a"]["auroc"].lower == pytest.approx(0.7145997269470679, abs=1e-12)
    assert res.per_label["a"]["auroc"].upper == pytest.approx(0.8253693200239538, abs=1e-12)
    assert res.per_label["c"]["npv"].lower == pytest.approx(0.7421593919955376, abs=1e-12)
    assert res.macro["auprc"].lower == pytest.approx(0.6300257632018079, abs=1e-12)
    assert res.micro["f1"].upper == pytest.approx(0.5728934151785714, abs=1e-12)


def test_bootstrap_auroc_interval_close_to_delong():
    """Two independent methods for the same interval: patient bootstrap (1 study / patient) vs DeLong."""
    rng = np.random.default_rng(5)
    n = 600
    y = rng.integers(0, 2, n).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    res = bootstrap_metrics(y_true=y[:, None], y_score=s[:, None], thresholds=[0.5], patient_ids=np.arange(n),
                            labels=["x"], n_boot=2000, seed=0)
    boot, dl = res.per_label["x"]["auroc"], delong_auc_ci(y, s)
    assert boot.lower == pytest.approx(dl.lower, abs=0.01)
    assert boot.upper == pytest.approx(dl.upper, abs=0.01)


def test_delong_pinned_on_toy_set():
    # values from R 4 / pROC 1.18: roc.test(roc(y, p), roc(y, b), method = "delong", paired = TRUE)
    r = delong_roc_test(Y, P, B)
    assert r.auc_a == pytest.approx(0.875, abs=1e-12)
    assert r.auc_b == pytest.approx(0.833333333333333, abs=1e-12)
    assert r.z == pytest.approx(0.320530382378016, abs=1e-9)
    assert r.p_value == pytest.approx(0.748566302466150, abs=1e-9)
    assert r.ci_a.lower == pytest.approx(0.645948983514592, abs=1e-9) and r.ci_a.upper == 1.0
    assert r.ci_b.lower == pytest.approx(0.490728738486594, abs=1e-9)
    same = delong_roc_test(Y, P, P)
    assert np.isnan(same.p_value) and same.difference == 0.0


_R_SCRIPT = r"""
suppressMessages(library(pROC))
d <- read.csv(commandArgs(TRUE)[1])
r1 <- roc(d$y, d$a, levels = c(0, 1), direction = "<", quiet = TRUE)
r2 <- roc(d$y, d$b, levels = c(0, 1), direction = "<", quiet = TRUE)
t <- roc.test(r1, r2, method = "delong", paired = TRUE)
c1 <- ci.auc(r1, method = "delong"); c2 <- ci.auc(r2, method = "delong")
lp <- qlogis(d$p)
s <- coef(glm(d$y ~ lp, family = binomial))[[2]]
i <- coef(glm(d$y ~ 1 + offset(lp), family = binomial))[[1]]
cat(sprintf('{"auc_a": %.17g, "auc_b": %.17g, "z": %.17g, "p": %.17g, "lo_a": %.17g, "hi_a": %.17g,
 "lo_b": %.17g, "hi_b": %.17g, "slope": %.17g, "intercept": %.17g}',
 auc(r1), auc(r2), t$statistic, t$p.value, c1[1], c1[3], c2[1], c2[3], s, i))
"""


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is required when CI=true (Debian r-base-core + r-cran-proc)")
        pytest.skip(f"{name} not installed (apt-get install r-base-core r-cran-proc); this test FAILS when CI=true")
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_and_calibration_match_r_proc(tmp_path, seed):
    rscript = _require_tool("Rscript")
    rng = np.random.default_rng(seed)
    n = 250
    y = rng.integers(0, 2, n)
    a = np.round(rng.normal(size=n) + 1.0 * y, 1)  # rounded: ties inside and across classes
    b = np.round(0.6 * a + rng.normal(size=n) * 0.8 + 0.3 * y, 1)
    p = 1 / (1 + np.exp(-(0.7 * a - 0.2)))
    csv = tmp_path / "scores.csv"
    np.savetxt(csv, np.c_[y, a, b, p], delimiter=",", header="y,a,b,p", comments="", fmt="%.17g")
    script = tmp_path / "delong.R"
    script.write_text(_R_SCRIPT)
    proc = subprocess.run([rscript, str(script), str(csv)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "pROC" in proc.stderr:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"R package pROC missing: {proc.stderr[-300:]}")
        pytest.skip("R package pROC not installed (apt-get install r-cran-proc)")
    assert proc.returncode == 0, proc.stderr
    ref = json.loads(proc.stdout)
    r = delong_roc_test(y, a, b)
    assert abs(r.auc_a - ref["auc_a"]) < 1e-12 and abs(r.auc_b - ref["auc_b"]) < 1e-12
    assert abs(r.z - ref["z"]) < 1e-6
    assert abs(r.p_value - ref["p"]) < 1e-6
    assert abs(r.ci_a.lower - ref["lo_a"]) < 1e-6 and abs(r.ci_a.upper - ref["hi_a"]) < 1e-6
    assert abs(r.ci_b.lower - ref["lo_b"]) < 1e-6 and abs(r.ci_b.upper - ref["hi_b"]) < 1e-6
    single = delong_auc_ci(y, a)
    assert abs(single.lower - ref["lo_a"]) < 1e-6 and abs(single.upper - ref["hi_a"]) < 1e-6
    slope, intercept = calibration_slope_intercept(y, p)
    assert abs(slope - ref["slope"]) < 1e-6 and abs(intercept - ref["intercept"]) < 1e-6


def test_errors_name_what_was_wrong():
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics([0, 1, np.nan], [0.1, 0.2, 0.3], threshold=0.5)
    with pytest.raises(ValueError, match="same length"):
        rank_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="positives and negatives"):
        delong_roc_test([1, 1], [0.1, 0.2], [0.3, 0.4])
