"""Shared toy data for the report tests (fixed seed, small enough for fast tests)."""

from __future__ import annotations

import numpy as np
import pytest

from clinmm.report.validation import FailureCase, _thumbnail_png, compute_validation_report

LABELS = ["nodule", "fever", "pneumonia"]


def toy_arrays(n: int = 240, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    c = len(LABELS)
    y = (rng.random((n, c)) < 0.3).astype(float)
    y[rng.random((n, c)) < 0.05] = np.nan
    signal = np.nan_to_num(y)
    raw = np.clip(rng.random((n, c)) * 0.6 + 0.35 * signal, 0.001, 0.999)
    score = np.clip(raw ** 1.3, 0, 1)
    patient = np.array([f"p{int(i)}" for i in rng.integers(0, n * 2 // 3, n)])
    return {
        "labels": LABELS,
        "y_true": y,
        "y_score": score,
        "y_score_uncalibrated": raw,
        "thresholds": np.array([0.4, 0.35, 0.45]),
        "patient_ids": patient,
        "subgroups": {"sex": rng.choice(["F", "M"], n), "site": rng.choice(["A", "B", "C"], n, p=[0.5, 0.42, 0.08])},
        "modality": rng.choice(["both", "image_only", "note_only"], n, p=[0.8, 0.12, 0.08]),
        "comparators": {
            "image_only": np.clip(score + rng.normal(0, 0.25, score.shape), 0, 1),
            "text_only": np.clip(score + rng.normal(0, 0.3, score.shape), 0, 1),
        },
        "comparator_descriptions": {"image_only": "same model, note removed", "text_only": "same model, image removed"},
        "ingestion_flow": {"manifest_studies": 1000, "split_studies": 250, "included": n,
                           "excluded": {"no usable input (no_decoder)": 10}},
        "model_card": {"intended_use": "Research use on synthetic data.", "training_data": {"studies": 700}},
    }


def _rate(hits, n):
    return {"hits": hits, "n": n, "rate": hits / n if n else None}


# the shape of clinmm.explain.faithfulness.evaluate_faithfulness's result (what `clinmm faithfulness` writes)
TOY_FAITHFULNESS = {
    "split": "test", "n_studies": 40, "n_random": 10, "ground_truth": True,
    "targets": {"pointing_image": 0.8, "pointing_text_top3": 0.8, "negated_below_affirmed": 0.8,
                "deletion_below_random": 0.9},
    "methods": {"attention": {
        "pointing_image": {**_rate(17, 20), "by_label": {"nodule": _rate(7, 10), "consolidation": _rate(10, 10)}},
        "pointing_text_top3": {**_rate(9, 12), "by_label": {"fever": _rate(9, 12)}},
        "negated_below_affirmed": {"displayed_heat": _rate(0, 0), "raw_score": _rate(0, 0)},
        "deletion": {"image": {"n": 20, "deletion_below_random": 0.95, "by_label": {}},
                     "text": {"n": 12, "deletion_below_random": 1.0, "by_label": {"fever": {
                         "n": 12, "deletion_below_random": 1.0}}}},
    }},
    "modality_share": {"fever": {"image": {"spearman": -0.1, "n": 30}, "text": {"spearman": 0.42, "n": 30}}},
}


@pytest.fixture(scope="session")
def toy_report():
    arrays = toy_arrays()
    thumb = _thumbnail_png(np.outer(np.linspace(0, 1, 64), np.ones(48)))
    failures = [FailureCase(study="s-001", label="fever", kind="false_positive", score=0.97, threshold=0.35,
                            truth=0, modality="both", thumbnail_png=thumb,
                            note_snippet="<script>alert(1)</script> Fever 39.2 [DATE]")]
    return compute_validation_report(**arrays, failure_cases=failures,
                                     faithfulness=TOY_FAITHFULNESS,
                                     n_boot=200, seed=0)
