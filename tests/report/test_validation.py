"""Layer 1 of the validation report: every number against scikit-learn / clinmm.metrics on fixed toy data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import classification_report

from clinmm.metrics import METRIC_NAMES, binary_metrics, calibration_summary, delong_roc_test
from clinmm.report.validation import compute_validation_report, select_confident_errors

from .conftest import LABELS, toy_arrays


def test_per_label_metrics_equal_sklearn(toy_report):
    a = toy_arrays()
    for j, lr in enumerate(toy_report.per_label):
        k = ~np.isnan(a["y_true"][:, j])
        m = binary_metrics(a["y_true"][k, j], a["y_score"][k, j], threshold=a["thresholds"][j])
        assert (lr.label, lr.n, lr.n_pos) == (LABELS[j], m.n, m.n_pos)
        assert lr.confusion == {"tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn}
        for name in METRIC_NAMES:
            ci = lr.metrics[name]
            assert ci.value == pytest.approx(getattr(m, name), abs=1e-15)
            assert ci.lower <= ci.value <= ci.upper and ci.n_valid == 200
        assert lr.auroc_delong.value == pytest.approx(m.auroc, abs=1e-12)
    for name in METRIC_NAMES:
        assert toy_report.macro[name].value == pytest.approx(np.mean([lr.metrics[name].value
                                                                      for lr in toy_report.per_label]))


def test_calibration_before_and_after(toy_report):
    a = toy_arrays()
    for j, cal in enumerate(toy_report.calibration):
        k = ~np.isnan(a["y_true"][:, j])
        before = calibration_summary(a["y_true"][k, j], a["y_score_uncalibrated"][k, j])
        after = calibration_summary(a["y_true"][k, j], a["y_score"][k, j])
        assert cal.before.ece == pytest.approx(before.ece) and cal.after.ece == pytest.approx(after.ece)
        assert cal.before.brier == pytest.approx(before.brier) and cal.after.slope == pytest.approx(after.slope)
        assert cal.before.ece != pytest.approx(cal.after.ece)


def test_classification_report_is_sklearns(toy_report):
    a = toy_arrays()
    complete = ~np.isnan(a["y_true"]).any(axis=1)
    expected = classification_report(a["y_true"][complete].astype(int),
                                     (a["y_score"][complete] >= a["thresholds"]).astype(int),
                                     target_names=LABELS, output_dict=True, zero_division=0)
    got = dict(toy_report.classification_report)
    assert got.pop("n_complete") == int(complete.sum())
    assert got == expected


def test_delong_comparisons_cover_every_pair(toy_report):
    a = toy_arrays()
    # fused, image_only, text_only: 3 pairs per label
    assert len(toy_report.comparisons) == 3 * len(LABELS)
    pairs = {(c.model_a, c.model_b) for c in toy_report.comparisons}
    assert pairs == {("fused", "image_only"), ("fused", "text_only"), ("image_only", "text_only")}
    c = next(c for c in toy_report.comparisons if c.label == "fever" and c.model_b == "text_only"
             and c.model_a == "fused")
    k = ~np.isnan(a["y_true"][:, 1])
    ref = delong_roc_test(a["y_true"][k, 1], a["y_score"][k, 1], a["comparators"]["text_only"][k, 1])
    assert c.result.p_value == pytest.approx(ref.p_value, abs=1e-15)
    assert c.result.auc_a > c.result.auc_b  # noise was added to the comparator
    assert set(toy_report.comparator_auroc) == {"image_only", "text_only"}


def test_groups_counts_and_small_flags(toy_report):
    a = toy_arrays()
    sites = {g.group: g for g in toy_report.subgroups if g.variable == "site"}
    for name, g in sites.items():
        rows = a["subgroups"]["site"] == name
        assert g.n_studies == int(rows.sum())
        assert g.n_patients == len(set(a["patient_ids"][rows]))
        assert g.small == (rows.sum() < 30)
    assert sites["C"].small and not sites["A"].small
    mods = [g.group for g in toy_report.by_modality]
    assert mods == ["both", "image_only", "note_only"]
    assert sum(g.n_studies for g in toy_report.by_modality) == 240
    assert any("site=C" in item for item in toy_report.limitations)


def test_json_export_is_strict_json(toy_report):
    text = toy_report.to_json()
    data = json.loads(text)  # allow_nan=False on export: NaN became null
    assert data["labels"] == LABELS and data["n_boot"] == 200
    assert data["per_label"][0]["metrics"]["auroc"]["value"] == pytest.approx(
        toy_report.per_label[0].metrics["auroc"].value)
    assert data["faithfulness"]["methods"]["attention"]["pointing_image"]["hits"] == 17


def test_not_computed_faithfulness_is_stated():
    a = toy_arrays(n=120, seed=1)
    rep = compute_validation_report(**a, n_boot=50)
    assert rep.faithfulness is None
    assert any("faithfulness was not computed" in item for item in rep.limitations)


def test_nan_metrics_when_a_label_has_no_positives():
    a = toy_arrays(n=120, seed=2)
    a["y_true"][:, 0] = np.where(np.isnan(a["y_true"][:, 0]), np.nan, 0.0)
    rep = compute_validation_report(**a, n_boot=50)
    lr = rep.per_label[0]
    assert math.isnan(lr.metrics["auroc"].value) and lr.auroc_delong is None
    assert all(c.result is None for c in rep.comparisons if c.label == LABELS[0])
    assert json.loads(rep.to_json())["per_label"][0]["metrics"]["auroc"]["value"] is None


def test_select_confident_errors():
    y = np.array([[0, 1], [1, 0], [0, 0], [1, 1]], dtype=float)
    s = np.array([[0.95, 0.9], [0.05, 0.2], [0.6, 0.1], [0.9, 0.8]])
    out = select_confident_errors(y_true=y, y_score=s, thresholds=np.array([0.5, 0.5]), labels=["a", "b"], k=3)
    # row 0 label a: FP at 0.95; row 1 label a: FN at 0.05 (wrong with 0.95); row 2 label a: FP at 0.6
    assert [(i, j, kind) for i, j, kind, _ in out] == [(0, 0, "false_positive"), (1, 0, "false_negative"),
                                                      (2, 0, "false_positive")]


def test_input_validation_names_the_problem():
    a = toy_arrays(n=60)
    bad = dict(a, thresholds=np.array([0.5]))
    with pytest.raises(ValueError, match="thresholds"):
        compute_validation_report(**bad, n_boot=10)
    bad = dict(a, modality=np.array(["both"] * 59 + ["image"]))
    with pytest.raises(ValueError, match="modality"):
        compute_validation_report(**bad, n_boot=10)


def test_confident_errors_spread_over_labels():
    y = np.zeros((40, 2))
    y[:, 1] = 1
    s = np.c_[np.linspace(0.6, 0.99, 40), np.full(40, 0.3)]  # label 0: 40 FPs (p up to .99); label 1: 40 FNs (p .3)
    out = select_confident_errors(y_true=y, y_score=s, thresholds=np.array([0.5, 0.5]), labels=["a", "b"], k=6)
    assert sorted(j for _, j, _, _ in out) == [0, 0, 0, 1, 1, 1]
    assert out[0][:3] == (39, 0, "false_positive")
