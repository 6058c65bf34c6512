"""Drift of a scored batch against the training reference stored in the checkpoint (``reference.json``).

- **Scores**: population stability index (PSI) per label between the checkpoint's validation probabilities and this
  batch's calibrated probabilities, on the reference's decile bins.
- **Inputs**: PSI and standardised mean difference per raw-intensity statistic (mean, std, 5th and 95th percentile
  of the modality values the model's intensity mapping starts from), per image, against the training images.
- **Modalities present**: fraction of studies with an image / a note, here vs in training.

``drift_score`` is the largest PSI of all; the usual reading of PSI is < 0.1 stable, 0.1–0.25 moderate shift,
> 0.25 major shift. scikit-learn and scipy have no PSI; it is the standard formula
``sum((p_i - q_i) * ln(p_i / q_i))`` over bins, with empty bins floored at ``eps``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["population_stability_index", "drift_report", "PSI_MODERATE", "PSI_MAJOR"]

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
_INTENSITY_KEYS = ("mean", "std", "p05", "p95")


def population_stability_index(reference: Sequence[float], current: Sequence[float], *, bins: int = 10,
                               eps: float = 1e-4) -> float | None:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins.

    Args:
        reference: reference sample (N,).
        current: current sample (M,).
        bins: number of quantile bins of the reference (ties merged).
        eps: floor for empty-bin fractions.

    Returns:
        PSI ≥ 0, or None when either sample is empty after dropping NaN.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return None
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def _smd(reference: np.ndarray, current: np.ndarray) -> float | None:
    if reference.size < 2 or current.size == 0:
        return None
    sd = float(reference.std(ddof=1))
    return float((current.mean() - reference.mean()) / sd) if sd > 0 else None


def _level(psi: float | None) -> str:
    if psi is None:
        return "n/a"
    return "major" if psi > PSI_MAJOR else "moderate" if psi > PSI_MODERATE else "stable"


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def drift_report(reference: dict, *, labels: Sequence[str], probs: np.ndarray, intensity: Sequence[dict],
                 image_present: Sequence[bool], note_present: Sequence[bool]) -> dict:
    """The ``drift.json`` content.

    Args:
        reference: the checkpoint's reference (``scores``: label → validation probabilities; ``intensity``: stat →
            per-image values; ``modalities_present``: image / note fractions).
        labels: label order of ``probs``.
        probs: (N, C) calibrated probabilities of the scored studies.
        intensity: per scored image, ``{"mean", "std", "p05", "p95"}`` raw-intensity statistics.
        image_present: per scored study.
        note_present: per scored study.

    Returns:
        JSON-ready dict with per-label score PSI, per-statistic intensity PSI and SMD, presence fractions and the
        overall ``drift_score`` (max PSI) with its ``level``.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(labels))  # (N, C)
    ref_scores = reference.get("scores", {}) or {}
    scores = {}
    for c, lab in enumerate(labels):
        psi = population_stability_index(ref_scores.get(lab, []), probs[:, c])
        scores[lab] = {"psi": _r(psi), "level": _level(psi), "n_reference": len(ref_scores.get(lab, [])),
                       "mean_reference": _r(float(np.mean(ref_scores[lab]))) if ref_scores.get(lab) else None,
                       "mean_current": _r(float(np.mean(probs[:, c]))) if probs.shape[0] else None}
    ref_int = reference.get("intensity", {}) or {}
    inten = {}
    for k in _INTENSITY_KEYS:
        ref = np.asarray(ref_int.get(k, []), dtype=np.float64)
        cur = np.asarray([s[k] for s in intensity if s and k in s], dtype=np.float64)
        psi = population_stability_index(ref, cur)
        inten[k] = {"psi": _r(psi), "level": _level(psi), "smd": _r(_smd(ref, cur)),
                    "mean_reference": _r(float(ref.mean())) if ref.size else None,
                    "mean_current": _r(float(cur.mean())) if cur.size else None}
    ref_pres = reference.get("modalities_present", {}) or {}
    presence = {
        "image": {"reference": _r(ref_pres.get("image")),
                  "current": _r(float(np.mean(image_present))) if len(image_present) else None},
        "note": {"reference": _r(ref_pres.get("note")),
                 "current": _r(float(np.mean(note_present))) if len(note_present) else None},
    }
    psis = [v["psi"] for v in scores.values() if v["psi"] is not None] + \
        [v["psi"] for v in inten.values() if v["psi"] is not None]
    score_psis = [v["psi"] for v in scores.values() if v["psi"] is not None]
    input_psis = [v["psi"] for v in inten.values() if v["psi"] is not None]
    overall = max(psis) if psis else None
    return {
        "method": "population stability index on the reference's decile bins (eps 1e-4); "
                  "SMD = (mean_current - mean_reference) / sd_reference",
        "thresholds": {"moderate": PSI_MODERATE, "major": PSI_MAJOR},
        "n_studies": int(probs.shape[0]),
        "n_images": int(len([s for s in intensity if s])),
        "drift_score": _r(overall),
        "level": _level(overall),
        "score_drift": _r(max(score_psis)) if score_psis else None,
        "input_drift": _r(max(input_psis)) if input_psis else None,
        "scores": scores,
        "intensity": inten,
        "modalities_present": presence,
    }
