"""Drift of a scored batch against the training reference stored in the checkpoint (``reference.json``).

- **Scores**: population stability index (PSI) per label between the checkpoint's validation probabilities and this
  batch's calibrated probabilities, on the reference's decile bins.
- **Inputs**: PSI and standardised mean difference per raw-intensity statistic (mean, std, 5th and 95th percentile
  of the modality values the model's intensity mapping starts from), per image, against the training images.
- **Modalities present**: fraction of studies with an image / a note, here vs in training.

PSI needs enough studies to mean anything: it is reported only when both samples hold at least ``MIN_PSI_N`` values.
The standardised mean difference (SMD) of each intensity statistic is always reported. ``drift_score`` is the largest
of every PSI and every ``|SMD| / 4`` (scaled so that the usual PSI reading applies to both: < 0.1 stable,
0.1–0.25 moderate shift, > 0.25 major shift, i.e. |SMD| > 1 is major). scikit-learn and scipy have no PSI; it is the
standard formula
``sum((q_i - p_i) * ln(q_i / p_i))`` over bins, with additive smoothing (0.5 per bin) and fewer bins for small
batches (≥ 5 studies per bin on average).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["population_stability_index", "drift_report", "PSI_MODERATE", "PSI_MAJOR", "MIN_PSI_N"]

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
MIN_PSI_N = 20
SMD_SCALE = 4.0
_INTENSITY_KEYS = ("mean", "std", "p05", "p95")


def population_stability_index(reference: Sequence[float], current: Sequence[float], *, bins: int = 10,
                               min_per_bin: int = 5, pseudo_count: float = 0.5) -> float | None:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins.

    Small batches get fewer bins (at least ``min_per_bin`` current values per bin on average, 2 bins at least) and
    every bin count gets ``pseudo_count`` added (additive smoothing), so a handful of studies does not read as a
    "major shift" just because most deciles are empty.

    Args:
        reference: reference sample (N,).
        current: current sample (M,).
        bins: number of quantile bins of the reference for large batches (ties merged).
        min_per_bin: fewer bins when M / bins would fall below this.
        pseudo_count: added to every bin count of both samples.

    Returns:
        PSI ≥ 0, or None when either sample is empty after dropping NaN.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return None
    n_bins = int(max(2, min(bins, min(ref.size, cur.size) // max(1, min_per_bin))))
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    k = edges.size + 1
    p = (np.bincount(np.searchsorted(edges, ref, side="right"), minlength=k) + pseudo_count) / (ref.size
                                                                                                + pseudo_count * k)
    q = (np.bincount(np.searchsorted(edges, cur, side="right"), minlength=k) + pseudo_count) / (cur.size
                                                                                                + pseudo_count * k)
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


def _psi(reference, current) -> float | None:
    ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if min(np.isfinite(ref).sum(), np.isfinite(cur).sum()) < MIN_PSI_N:
        return None
    return population_stability_index(ref, cur)


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
        overall ``drift_score`` (max of every PSI and |SMD| / 4) with its ``level``.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(labels))  # (N, C)
    ref_scores = reference.get("scores", {}) or {}
    scores = {}
    for c, lab in enumerate(labels):
        psi = _psi(ref_scores.get(lab, []), probs[:, c])
        scores[lab] = {"psi": _r(psi), "level": _level(psi), "n_reference": len(ref_scores.get(lab, [])),
                       "mean_reference": _r(float(np.mean(ref_scores[lab]))) if ref_scores.get(lab) else None,
                       "mean_current": _r(float(np.mean(probs[:, c]))) if probs.shape[0] else None}
    ref_int = reference.get("intensity", {}) or {}
    inten = {}
    for k in _INTENSITY_KEYS:
        ref = np.asarray(ref_int.get(k, []), dtype=np.float64)
        cur = np.asarray([s[k] for s in intensity if s and k in s], dtype=np.float64)
        psi = _psi(ref, cur)
        smd = _smd(ref, cur)
        inten[k] = {"psi": _r(psi), "level": _level(max(psi or 0.0, abs(smd or 0.0) / SMD_SCALE)), "smd": _r(smd),
                    "mean_reference": _r(float(ref.mean())) if ref.size else None,
                    "mean_current": _r(float(cur.mean())) if cur.size else None}
    ref_pres = reference.get("modalities_present", {}) or {}
    presence = {
        "image": {"reference": _r(ref_pres.get("image")),
                  "current": _r(float(np.mean(image_present))) if len(image_present) else None},
        "note": {"reference": _r(ref_pres.get("note")),
                 "current": _r(float(np.mean(note_present))) if len(note_present) else None},
    }
    score_psis = [v["psi"] for v in scores.values() if v["psi"] is not None]
    input_psis = [v["psi"] for v in inten.values() if v["psi"] is not None]
    smds = [abs(v["smd"]) for v in inten.values() if v["smd"] is not None]
    parts = score_psis + input_psis + [m / SMD_SCALE for m in smds]
    overall = max(parts) if parts else None
    return {
        "method": "PSI on the reference's quantile bins (10, fewer for < 50 studies; +0.5 per bin; only with >= "
                  f"{MIN_PSI_N} values on both sides); SMD = (mean_current - mean_reference) / sd_reference; "
                  f"drift_score = max(every PSI, every |SMD| / {SMD_SCALE:g})",
        "thresholds": {"moderate": PSI_MODERATE, "major": PSI_MAJOR},
        "n_studies": int(probs.shape[0]),
        "n_images": int(len([s for s in intensity if s])),
        "drift_score": _r(overall),
        "level": _level(overall),
        "score_drift": _r(max(score_psis)) if score_psis else None,
        "input_drift": _r(max(input_psis)) if input_psis else None,
        "input_shift": _r(max(smds)) if smds else None,
        "min_n_for_psi": MIN_PSI_N,
        "scores": scores,
        "intensity": inten,
        "modalities_present": presence,
    }
