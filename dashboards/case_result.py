"""One study's result as the case view shows it: probabilities, thresholds, heatmaps, note spans, modality share.

Two sources: the live model (``clinmm.inference.Predictor`` with ``explain=True``; what the case view and the
score-one-study page use) and, without a model, the stored row of the scoring output (probabilities only).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CaseResult",
    "stored_result",
    "live_result",
    "scrub_note",
    "remap_spans",
    "remap_words",
]

logger = logging.getLogger(__name__)

@dataclass
class CaseResult:
    """Everything the case view needs about one study's prediction.

    Args:
        labels: finding names in model order.
        probs: (C,) probabilities (calibrated).
        decisions: (C,) 0/1 decisions at ``thresholds``.
        thresholds: (C,) decision thresholds (NaN when unknown).
        image_present: the model saw an image.
        note_present: the model saw a note.
        source: ``"live"`` (re-scored by the model now) or ``"stored"`` (the scoring output's row).
        heatmaps: label → (H0, W0) heat on the original pixel grid, in ``clinmm.explain`` units (share relative to
            uniform × probability), drawn on the fixed scale [0, ``image_vmax``].
        heat_slice: slice of the volume the heatmaps belong to.
        heat_carried: the heat was carried back from the image tokens to the image regions they read it from
            (occlusion with a healthy reference, ``fusion.image_relevance_carry``).
        note_words: label → the note's words (``clinmm.explain.attention.WordScore``: ORIGINAL-note spans, heat).
        image_vmax: top of the fixed image colour scale.
        text_vmax: top of the fixed note colour scale.
        modality_share: label → (image share, text share) of the label query's attention.
        without: label → (probability with the image removed, with the note removed), through the model's own
            missing-modality path; an entry is None where that modality was absent anyway (live results only).
        image_status: ingestion status of the image (``ok``, ``missing``, or an error status).
        model_sha256: checkpoint sha256.
        check: the study against the model's scope and training images (live results only;
            :class:`clinmm.scoring.study_check.StudyCheck`).
        scope_message: one sentence when the study is outside the model's scope ("" otherwise).
    """

    labels: list[str]
    probs: np.ndarray
    decisions: np.ndarray
    thresholds: np.ndarray
    image_present: bool
    note_present: bool
    source: str
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    heat_slice: int = 0
    heat_carried: bool = False
    note_words: dict[str, list[Any]] = field(default_factory=dict)
    image_vmax: float = 4.0
    text_vmax: float = 4.0
    modality_share: dict[str, tuple[float, float]] = field(default_factory=dict)
    without: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    image_status: str = "ok"
    model_sha256: str = ""
    check: Any = None
    scope_message: str = ""

    def table(self) -> list[dict[str, Any]]:
        """One row per label: probability, threshold, decision, and the probabilities without the image / the note
        (live results) or the image / text share (stored scores)."""
        rows = []
        for c, label in enumerate(self.labels):
            share = self.modality_share.get(label)
            rows.append({
                "finding": label,
                "probability": float(self.probs[c]),
                "threshold": float(self.thresholds[c]),
                "decision": "positive" if int(self.decisions[c]) else "negative",
            })
            if not self.without:  # stored scores: the attention share (the panel says what it is not)
                rows[-1]["image share"] = None if share is None else round(float(share[0]), 3)
                rows[-1]["note share"] = None if share is None else round(float(share[1]), 3)
            else:
                p_no_image, p_no_note = self.without.get(label, (None, None))
                rows[-1]["without image"] = None if p_no_image is None else round(p_no_image, 3)
                rows[-1]["without note"] = None if p_no_note is None else round(p_no_note, 3)
        return rows


def stored_result(row: dict[str, Any], labels: Sequence[str], thresholds: dict[str, float] | None = None) -> CaseResult:
    """A :class:`CaseResult` from a predictions row (no explanations)."""
    from clinmm.scoring.study_check import StudyCheck

    thresholds = thresholds or {}
    probs = np.array([_number(row.get(f"prob_{l}")) for l in labels], dtype=np.float32)
    codes = [c for c in str(row.get("unlike_training") or "").split(";") if c]
    decisions = np.array([int(np.nan_to_num(_number(row.get(f"decision_{l}")), nan=0.0)) for l in labels],
                         dtype=np.int64)
    return CaseResult(
        labels=list(labels), probs=probs, decisions=decisions,
        thresholds=np.array([thresholds.get(l, np.nan) for l in labels], dtype=np.float32),
        image_present=bool(row.get("image_present", True)), note_present=bool(row.get("note_present", True)),
        source="stored", image_status=str(row.get("status", "ok")), model_sha256=str(row.get("model_sha256", "")),
        check=StudyCheck(codes=codes) if codes else None,
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def live_result(predictor: Any, image: Any, note: str | None, *, key: str = "") -> CaseResult:
    """Score and explain one study with a cached :class:`clinmm.inference.Predictor`.

    Explanations come from :func:`clinmm.explain.attention.explain_prediction` (the format scoring and the validation
    report use): per-label heat on the original pixel grid and per-word heat, both on fixed scales.

    Args:
        predictor: the live predictor (its checkpoint's labels, thresholds and calibration are used).
        image: DICOM path, series folder, :class:`clinmm.io.study.ImageVolume`, or None (no image).
        note: the raw note (offsets refer to it), or None / "" (no note).
        key: study key (logged by the predictor on ingestion failures).
    """
    from clinmm.explain.attention import IMAGE_VMAX, TEXT_VMAX, explain_prediction
    from clinmm.scoring.study_check import check_study

    sample = predictor.prepare(image, note or None, key=key)
    check = check_study(sample, scope=predictor.loaded.scope, reference=predictor.loaded.reference)
    pred = predictor.predict([sample], explain=True)[0]
    labels = list(pred.labels)
    result = CaseResult(
        labels=labels, probs=np.asarray(pred.probs, dtype=np.float32),
        decisions=np.asarray(pred.decisions).astype(np.int64), thresholds=np.asarray(pred.thresholds, np.float32),
        image_present=bool(pred.image_present), note_present=bool(pred.text_present), source="live",
        image_status=sample.image_status, model_sha256=str(getattr(predictor.loaded, "sha256", "")),
        image_vmax=IMAGE_VMAX, text_vmax=TEXT_VMAX, check=check,
        scope_message=check.scope_message(predictor.loaded.scope),
    )
    if hasattr(image, "pixels"):  # an ImageVolume: remember which slice a 2D model read (series: the middle one)
        from clinmm.data.transforms import select_slice

        result.heat_slice = int(select_slice(image))
    if pred.modality_share is not None:
        result.modality_share = {l: (float(pred.modality_share[c, 0]), float(pred.modality_share[c, 1]))
                                 for c, l in enumerate(labels)}
    if pred.probs_without_image is not None and pred.probs_without_note is not None:
        result.without = {l: (float(pred.probs_without_image[c]) if pred.image_present else None,
                              float(pred.probs_without_note[c]) if pred.text_present else None)
                          for c, l in enumerate(labels)}
    if pred.image_attention is None and pred.text_attention is None:
        return result  # a fusion without attention (concat / gated): probabilities only
    explanation = explain_prediction(sample, pred)
    result.heat_carried = bool(predictor.carries_image_relevance)
    for item in explanation.labels:
        if item.image is not None and item.image.heat.ndim == 2:
            result.heatmaps[item.label] = item.image.heat  # (H0, W0) heat units, fixed scale [0, image_vmax]
        if item.words:
            result.note_words[item.label] = list(item.words)
    return result


def scrub_note(text: str) -> str:
    """The note for display after best-effort PHI scrubbing (:func:`clinmm.text.preprocess.scrub_phi`).

    Dates, phone numbers, IDs and names after "Dr." / "Patient:" become ``[DATE]``, ``[PHONE]``, ``[ID]``,
    ``[NAME]``. A safety net, not de-identification: pages show :data:`dashboards.render.SCRUB_NOTICE` beside it.
    """
    from clinmm.text.preprocess import scrub_phi

    return scrub_phi(text).text if text else ""


def remap_spans(original: str, scrubbed: str, spans: Sequence[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Move character spans of ``original`` onto ``scrubbed`` (spans inside replaced identifiers are dropped).

    Uses :class:`difflib.SequenceMatcher` matching blocks, so any scrubber that replaces substrings works.
    """
    if original == scrubbed:
        return list(spans)
    mapping = np.full(len(original) + 1, -1, dtype=np.int64)
    matcher = difflib.SequenceMatcher(a=original, b=scrubbed, autojunk=False)
    for block in matcher.get_matching_blocks():
        mapping[block.a : block.a + block.size] = np.arange(block.b, block.b + block.size)
    out = []
    for start, end, weight in spans:
        inside = mapping[start:end]
        kept = inside[inside >= 0]
        if kept.size == len(inside) and kept.size:  # the whole span survived scrubbing
            out.append((int(kept[0]), int(kept[-1]) + 1, weight))
    return out


def remap_words(original: str, scrubbed: str, words: Sequence[Any]) -> list[Any]:
    """:func:`remap_spans` for ``WordScore`` objects: their spans moved onto the scrubbed note (others dropped)."""
    if original == scrubbed:
        return list(words)
    import dataclasses

    moved = remap_spans(original, scrubbed, [(w.start, w.end, i) for i, w in enumerate(words)])
    return [dataclasses.replace(words[int(i)], start=s, end=e, text=scrubbed[s:e]) for s, e, i in moved]
