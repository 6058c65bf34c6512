"""One study's result as the case view shows it: probabilities, thresholds, heatmaps, note spans, modality share.

Two sources: the live model (``clinmm.inference.Predictor`` with ``explain=True``; what the case view and the
score-one-study page use) and, without a model, the stored row of the scoring output (probabilities only).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CaseResult",
    "stored_result",
    "live_result",
    "scrub_note",
    "remap_spans",
    "HEAT_DENSITY_MAX",
]

logger = logging.getLogger(__name__)

#: Heatmaps show attention density relative to uniform attention over the image tokens, on a FIXED scale:
#: 0 (no attention) … HEAT_DENSITY_MAX × uniform (saturated). No per-image min–max rescaling.
HEAT_DENSITY_MAX = 8.0


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
        heatmaps: label → (H0, W0) map in [0, 1] on the original pixel grid (fixed scale, see HEAT_DENSITY_MAX).
        heat_slice: slice of the volume the heatmaps belong to.
        note_spans: label → [(start, end, weight)] character spans in the ORIGINAL note.
        modality_share: label → (image share, text share) of the label query's attention.
        image_status: ingestion status of the image (``ok``, ``missing``, or an error status).
        model_sha256: checkpoint sha256.
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
    note_spans: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)
    modality_share: dict[str, tuple[float, float]] = field(default_factory=dict)
    image_status: str = "ok"
    model_sha256: str = ""

    def table(self) -> list[dict[str, Any]]:
        """One row per label: probability, threshold, decision, image / text share."""
        rows = []
        for c, label in enumerate(self.labels):
            share = self.modality_share.get(label)
            rows.append({
                "finding": label,
                "probability": float(self.probs[c]),
                "threshold": float(self.thresholds[c]),
                "decision": "positive" if int(self.decisions[c]) else "negative",
                "image share": None if share is None else round(float(share[0]), 3),
                "note share": None if share is None else round(float(share[1]), 3),
            })
        return rows


def stored_result(row: dict[str, Any], labels: Sequence[str], thresholds: dict[str, float] | None = None) -> CaseResult:
    """A :class:`CaseResult` from a predictions row (no explanations)."""
    thresholds = thresholds or {}
    probs = np.array([_number(row.get(f"prob_{l}")) for l in labels], dtype=np.float32)
    decisions = np.array([int(np.nan_to_num(_number(row.get(f"decision_{l}")), nan=0.0)) for l in labels],
                         dtype=np.int64)
    return CaseResult(
        labels=list(labels), probs=probs, decisions=decisions,
        thresholds=np.array([thresholds.get(l, np.nan) for l in labels], dtype=np.float32),
        image_present=bool(row.get("image_present", True)), note_present=bool(row.get("note_present", True)),
        source="stored", image_status=str(row.get("status", "ok")), model_sha256=str(row.get("model_sha256", "")),
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def live_result(predictor: Any, image: Any, note: str | None, *, key: str = "") -> CaseResult:
    """Score and explain one study with a cached :class:`clinmm.inference.Predictor`.

    Args:
        predictor: the live predictor (its checkpoint's labels, thresholds and calibration are used).
        image: DICOM path, series folder, :class:`clinmm.io.study.ImageVolume`, or None (no image).
        note: the raw note (offsets refer to it), or None / "" (no note).
        key: study key (logged by the predictor on ingestion failures).
    """
    sample = predictor.prepare(image, note or None, key=key)
    pred = predictor.predict([sample], explain=True)[0]
    labels = list(pred.labels)
    result = CaseResult(
        labels=labels, probs=np.asarray(pred.probs, dtype=np.float32),
        decisions=np.asarray(pred.decisions).astype(np.int64), thresholds=np.asarray(pred.thresholds, np.float32),
        image_present=bool(pred.image_present), note_present=bool(pred.text_present), source="live",
        image_status=sample.image_status, model_sha256=str(getattr(predictor.loaded, "sha256", "")),
    )
    if hasattr(image, "pixels"):  # an ImageVolume: remember which slice a 2D model read (series: the middle one)
        from clinmm.data.transforms import select_slice

        result.heat_slice = int(select_slice(image))
    if pred.modality_share is not None:
        result.modality_share = {l: (float(pred.modality_share[c, 0]), float(pred.modality_share[c, 1]))
                                 for c, l in enumerate(labels)}
    if pred.image_attention is not None and sample.letterbox is not None and pred.image_present:
        grid = pred.image_attention  # (C, h, w), each label's share of one softmax over image + text tokens
        n_tokens = grid.shape[1] * grid.shape[2]
        for c, label in enumerate(labels):
            density = grid[c] * n_tokens  # (h, w): 1.0 = uniform attention over the image tokens
            heat = np.clip(density / HEAT_DENSITY_MAX, 0.0, 1.0)
            result.heatmaps[label] = np.clip(sample.letterbox.to_original(heat), 0.0, 1.0)  # (H0, W0)
    if pred.text_attention is not None and pred.text_spans is not None and pred.text_present:
        spans = np.asarray(pred.text_spans)  # (T, 2)
        for c, label in enumerate(labels):
            weights = np.asarray(pred.text_attention[c], dtype=np.float32)  # (T,)
            result.note_spans[label] = [(int(s), int(e), float(w)) for (s, e), w in zip(spans, weights, strict=True)
                                        if e > s]
    return result


def scrub_note(text: str) -> tuple[str, bool]:
    """Best-effort PHI scrubbing with the text engineer's ``clinmm.text.preprocess`` scrubber.

    Returns:
        (scrubbed text, True) — or ("", False) when no scrubber is installed: the note is then not shown at all.
    """
    if not text:
        return "", True
    scrubber = _find_scrubber()
    if scrubber is None:
        return "", False
    out = scrubber(text)
    return (out.text if hasattr(out, "text") else str(out)), True


def _find_scrubber() -> Callable[[str], Any] | None:
    try:
        from clinmm.text import preprocess
    except ImportError:
        return None
    for name in ("scrub_phi", "scrub_note", "scrub"):
        fn = getattr(preprocess, name, None)
        if callable(fn):
            return fn
    return None


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
