"""Per-label explanations from the fusion attention: an image heatmap on the ORIGINAL pixel grid, note words with
their original character spans, and the modality share.

The same containers (:class:`StudyExplanation`, :class:`LabelExplanation`, :class:`ImageMap`, :class:`WordScore`) hold
Grad-CAM and integrated-gradients explanations too (:func:`explanation_from_maps`), so scoring (``--explain``), the
validation report and the dashboard read one format.

Fixed scale (no per-image min–max): every map is first turned into a *share* of the label's evidence relative to
uniform (1.0 = the value every unit would get if the evidence were spread evenly over the image tokens / note tokens),
then multiplied by the label's calibrated probability. The displayed ``heat`` is that number, drawn on the fixed range
``[0, IMAGE_VMAX]`` / ``[0, TEXT_VMAX]`` for every study, so a study the model calls negative stays cold even though
softmax attention always sums to one somewhere.

Example::

    predictor = Predictor.from_path("runs/demo/checkpoint", keep_display=True)
    sample = predictor.prepare("study.dcm", note_text)
    pred = predictor.predict([sample], explain=True)[0]
    exp = explain_prediction(sample, pred)            # StudyExplanation
    exp.label("nodule").image.heat                    # (H0, W0) on the DICOM pixel grid
    exp.label("fever").top_words(3)                   # [WordScore(start, end, text, score, heat), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clinmm.data.transforms import Letterbox
from clinmm.text.chunking import TokenSpan, word_scores

__all__ = [
    "IMAGE_VMAX",
    "TEXT_VMAX",
    "WordScore",
    "ImageMap",
    "LabelExplanation",
    "StudyExplanation",
    "explain_prediction",
    "explanation_from_maps",
    "words_from_tokens",
    "image_map",
]

IMAGE_VMAX = 4.0  # top of the fixed colour scale for image heat (× uniform × probability)
TEXT_VMAX = 4.0  # top of the fixed colour scale for word heat



@dataclass
class WordScore:
    """One word of the note with its attribution.

    Args:
        start: first character in the ORIGINAL note.
        end: one past the last character.
        text: the word as written.
        score: raw attribution (attention mass summed over the word's pieces; signed for integrated gradients).
        heat: the displayed value on the fixed scale (share relative to uniform × probability; ≥ 0).
    """

    start: int
    end: int
    text: str
    score: float
    heat: float

    @property
    def is_punctuation(self) -> bool:
        return not any(ch.isalnum() for ch in self.text)

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text, "score": round(self.score, 6),
                "heat": round(self.heat, 4)}


@dataclass
class ImageMap:
    """A label's image heatmap.

    Args:
        grid: (h, w) the map as computed (token grid for attention, model input grid for Grad-CAM / IG), heat units.
        heat: (H0, W0) the same map on the ORIGINAL DICOM pixel grid (padding removed, resize undone), heat units;
            for a 3D token grid (d, H0, W0), one map per token slice.
        peak: (row, col) of the maximum of ``heat`` on the original grid (for 3D: (slice, row, col)).
        slice_index: the volume slice the model read (2D models on a series read one slice), None when the sample
            does not record it.
    """

    grid: np.ndarray
    heat: np.ndarray
    peak: tuple[int, ...]
    slice_index: int | None = None

    def to_dict(self, *, include_maps: bool = False) -> dict:
        d = {"peak": list(self.peak), "slice_index": self.slice_index, "grid_shape": list(self.grid.shape),
             "shape": list(self.heat.shape), "heat_max": round(float(self.heat.max()), 4),
             "heat_mean": round(float(self.heat.mean()), 4)}
        if include_maps:
            d["grid"] = np.round(self.grid, 5).tolist()
        return d


@dataclass
class LabelExplanation:
    """Everything about one label of one study.

    Args:
        label: finding name.
        prob: calibrated probability.
        decision: the thresholded decision.
        threshold: the stored decision threshold.
        modality_share: (image, text) share of the label's attention, or None.
        image: the heatmap, or None without an image.
        words: every word of the note in reading order (empty without a note).
    """

    label: str
    prob: float
    decision: bool
    threshold: float
    modality_share: tuple[float, float] | None
    image: ImageMap | None
    words: list[WordScore] = field(default_factory=list)

    def top_words(self, k: int = 3, *, skip_punctuation: bool = True) -> list[WordScore]:
        """The ``k`` words with the highest raw score (punctuation skipped by default)."""
        words = [w for w in self.words if not (skip_punctuation and w.is_punctuation)]
        return sorted(words, key=lambda w: (-w.score, w.start))[:k]

    def to_dict(self, *, include_maps: bool = False, top_k: int = 10) -> dict:
        return {
            "label": self.label, "prob": round(self.prob, 6), "decision": self.decision,
            "threshold": round(self.threshold, 6),
            "modality_share": None if self.modality_share is None else
            {"image": round(self.modality_share[0], 6), "text": round(self.modality_share[1], 6)},
            "image": None if self.image is None else self.image.to_dict(include_maps=include_maps),
            "top_words": [w.to_dict() for w in self.top_words(top_k)],
            "words": [w.to_dict() for w in self.words] if include_maps else None,
        }


@dataclass
class StudyExplanation:
    """A study's explanation for every label, by one method.

    Args:
        key: the sample key.
        method: ``attention``, ``gradcam``, ``gradcam++``, ``hirescam`` or ``integrated_gradients``.
        labels: one :class:`LabelExplanation` per label, in model order.
        image_present: the model saw an image.
        text_present: the model saw a note.
        scale: the fixed colour scale (``image_vmax``, ``text_vmax``) and what heat means.
    """

    key: str
    method: str
    labels: list[LabelExplanation]
    image_present: bool
    text_present: bool
    scale: dict = field(default_factory=lambda: {"image_vmax": IMAGE_VMAX, "text_vmax": TEXT_VMAX,
                                                  "units": "share relative to uniform x probability"})

    def label(self, name: str) -> LabelExplanation:
        for item in self.labels:
            if item.label == name:
                return item
        raise KeyError(f"explanation of {self.key!r} has no label {name!r}; labels: {[x.label for x in self.labels]}")

    def to_dict(self, *, include_maps: bool = False) -> dict:
        """JSON-ready numbers (no pixels unless ``include_maps``; word texts are the note's words)."""
        return {"key": self.key, "method": self.method, "image_present": self.image_present,
                "text_present": self.text_present, "scale": dict(self.scale),
                "labels": [x.to_dict(include_maps=include_maps) for x in self.labels]}


def words_from_tokens(text: str, scores: np.ndarray, spans: np.ndarray, *, prob: float = 1.0,
                      relative_to: int | None = None, reduce: str = "sum") -> list[WordScore]:
    """Merge word-piece scores into words of the original note.

    Args:
        text: the original note.
        scores: (T,) one score per kept token (attention mass, or signed attribution).
        spans: (T, 2) each token's ``[start, end)`` in ``text``; ``(0, 0)`` (e.g. [CLS]) is ignored.
        prob: the label's probability (multiplies the displayed heat).
        relative_to: when given, heat = positive score × ``relative_to`` × prob (attention: the number of tokens, so
            a label that mostly looks at the image stays cool on the note); otherwise the positive scores are first
            normalised to a share of their sum, relative to uniform over the note's tokens.
        reduce: how a word's pieces combine: ``sum`` (attributions that add up, e.g. integrated gradients) or
            ``max`` (attention: a word is as hot as its hottest piece, so long words split into many pieces are not
            favoured).

    Returns:
        The note's words in reading order (word pieces merged with :func:`clinmm.text.chunking.word_scores`; a
        word's score is the sum over its pieces; punctuation tokens stay separate words).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)  # (T,)
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)  # (T, 2)
    if scores.shape[0] != spans.shape[0]:
        raise ValueError(f"words_from_tokens: {scores.shape[0]} scores for {spans.shape[0]} token spans")
    real = spans[:, 1] > spans[:, 0]  # (T,) tokens with characters ([CLS] has (0, 0))
    tokens = sorted((TokenSpan(int(a), int(b), float(v)) for (a, b), v in zip(spans[real], scores[real])),
                    key=lambda t: (t.start, t.end))
    if reduce not in ("sum", "max"):
        raise ValueError(f"words_from_tokens: reduce must be 'sum' or 'max', got {reduce!r}")
    words = word_scores(tokens, text, reduce=reduce)  # word pieces that touch → one word
    if not words:
        return []
    word_score = np.array([w.score for w in words])  # (W,)
    positive = np.clip(scores[real], 0.0, None)
    total = positive.sum()
    n_tokens = max(int(real.sum()), 1)
    if relative_to is not None:
        rel = np.clip(word_score, 0.0, None) * relative_to
    else:
        rel = np.clip(word_score, 0.0, None) / total * n_tokens if total > 0 else np.zeros_like(word_score)
    return [WordScore(start=w.start, end=w.end, text=text[w.start : w.end], score=float(w.score),
                      heat=float(h * prob)) for w, h in zip(words, rel)]


def _relative(map_: np.ndarray) -> np.ndarray:
    """Positive part as a share relative to uniform (mean 1 over the map; zeros stay zeros)."""
    pos = np.clip(np.asarray(map_, dtype=np.float64), 0.0, None)
    total = pos.sum()
    return (pos / total * pos.size).astype(np.float32) if total > 0 else np.zeros_like(pos, dtype=np.float32)


def image_map(grid_map: np.ndarray, letterbox: Letterbox, *, prob: float = 1.0, slice_index: int | None = None,
              relative_to: int | None = None) -> ImageMap:
    """A map on the model grid → :class:`ImageMap` with its heat on the original DICOM pixel grid.

    Args:
        grid_map: (h, w) over the WHOLE model input (padding included), or (d, h, w) for a 3D token grid.
        letterbox: the sample's resize-and-pad record.
        prob: the label's probability (heat = share relative to uniform × prob).
        slice_index: the volume slice the model read.
        relative_to: number of units that "uniform" is spread over (default: the map's own size). Attention passes
            the number of image tokens so a label that looks mostly at the note stays cool on the image.
    """
    g = np.asarray(grid_map, dtype=np.float64)
    pos = np.clip(g, 0.0, None)
    total = pos.sum()
    n = relative_to if relative_to is not None else pos.size
    heat_grid = (pos * n if relative_to is not None else (pos / total * n if total > 0 else pos)) * prob
    heat_grid = heat_grid.astype(np.float32)
    if heat_grid.ndim == 2:
        heat = letterbox.to_original(heat_grid)  # (H0, W0)
        heat = np.clip(heat, 0.0, None)
        peak = tuple(int(i) for i in np.unravel_index(int(np.argmax(heat)), heat.shape))
    elif heat_grid.ndim == 3:
        heat = np.clip(np.stack([letterbox.to_original(s) for s in heat_grid]), 0.0, None)  # (d, H0, W0)
        peak = tuple(int(i) for i in np.unravel_index(int(np.argmax(heat)), heat.shape))
    else:
        raise ValueError(f"image_map: expected a (h, w) or (d, h, w) map, got shape {g.shape}")
    return ImageMap(grid=heat_grid, heat=heat.astype(np.float32), peak=peak, slice_index=slice_index)


def explanation_from_maps(sample, prediction, *, method: str, image_maps: np.ndarray | None,
                          token_scores: np.ndarray | None, token_spans: np.ndarray | None,
                          labels: Sequence[str] | None = None, image_relative_to: int | None = None,
                          text_relative_to: int | None = None, word_reduce: str = "sum") -> StudyExplanation:
    """Assemble a :class:`StudyExplanation` from per-label maps of any method.

    Args:
        sample: the :class:`~clinmm.data.dataset.Sample` (its ``letterbox`` and ``note_text`` are used).
        prediction: the :class:`~clinmm.inference.Prediction` (probabilities, decisions, modality share).
        method: method name written into the output.
        image_maps: (C, h, w) maps over the whole model input, or None.
        token_scores: (C, T) per kept token, or None.
        token_spans: (T, 2) character spans of the kept tokens.
        labels: restrict to these label names (default: all).
        image_relative_to: see :func:`image_map`.
        text_relative_to: see :func:`words_from_tokens`.
        word_reduce: ``sum`` or ``max`` over a word's pieces (see :func:`words_from_tokens`).
    """
    names = list(prediction.labels)
    wanted = list(labels) if labels is not None else names
    unknown = [x for x in wanted if x not in names]
    if unknown:
        raise KeyError(f"explain: labels {unknown} are not in the model's labels {names}")
    slice_index = getattr(sample, "slice_index", None)
    out = []
    for name in wanted:
        c = names.index(name)
        prob = float(prediction.probs[c])
        share = None
        if prediction.modality_share is not None:
            share = (float(prediction.modality_share[c][0]), float(prediction.modality_share[c][1]))
        img = None
        if image_maps is not None and prediction.image_present and sample.letterbox is not None:
            img = image_map(image_maps[c], sample.letterbox, prob=prob, slice_index=slice_index,
                            relative_to=image_relative_to)
        words: list[WordScore] = []
        if token_scores is not None and prediction.text_present and sample.note_text:
            words = words_from_tokens(sample.note_text, token_scores[c], token_spans, prob=prob,
                                      relative_to=text_relative_to, reduce=word_reduce)
        out.append(LabelExplanation(label=name, prob=prob, decision=bool(prediction.decisions[c]),
                                    threshold=float(prediction.thresholds[c]), modality_share=share, image=img,
                                    words=words))
    return StudyExplanation(key=prediction.key, method=method, labels=out, image_present=bool(prediction.image_present),
                            text_present=bool(prediction.text_present))


def _positive_share(image: np.ndarray | None, text: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Signed relevance → each token's share of the label's positive evidence over both modalities (per label;
    sums to 1 where any token pushes the label up, all zeros where none does)."""
    parts = [np.clip(x.reshape(x.shape[0], -1), 0.0, None) for x in (image, text) if x is not None]  # (C, n) each
    total = sum(p.sum(1) for p in parts)  # (C,)
    scale = np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), 0.0)[:, None]  # (C, 1)

    def share(x):
        return None if x is None else (np.clip(x, 0.0, None).reshape(x.shape[0], -1) * scale).reshape(x.shape)

    return share(image), share(text)


def explain_prediction(sample, prediction, labels: Sequence[str] | None = None, *,
                       weighting: str = "relevance") -> StudyExplanation:
    """The attention explanation (what the dashboard shows) of one predicted study.

    Args:
        sample: the prepared :class:`~clinmm.data.dataset.Sample` (needs ``letterbox`` and ``note_text``).
        prediction: its :class:`~clinmm.inference.Prediction` from ``Predictor.predict(..., explain=True)``.
        labels: restrict to these label names (default: all).
        weighting: ``relevance`` (default): each token's signed contribution to the label's logit — its Shapley
            value over the tokens the label query's attention can see
            (:meth:`clinmm.models.fusion.CrossAttentionFusion.token_relevance`); the map shows the positive part, as
            a share of the label's positive evidence over image and note tokens together, so a token the label
            attends to but that argues against it (a negated mention) stays cold. ``raw``: the attention weights
            alone (scaled by the modality share), kept for comparison — they say where the label query looked, not
            what moved its score.

    Returns:
        :class:`StudyExplanation` with ``method="attention"`` (``"raw_attention"`` for ``weighting="raw"``). Image
        heat is a token's share relative to uniform over the image tokens (×Ni) × probability; word heat is relative
        to uniform over the note's tokens × probability, a word taking the maximum over its word pieces.

    Raises:
        ValueError: the prediction was made without ``explain=True`` or by a fusion without attention, or
            ``weighting`` is unknown.
    """
    if weighting not in ("relevance", "raw"):
        raise ValueError(f"explain_prediction: weighting must be 'relevance' or 'raw', got {weighting!r}")
    if prediction.image_attention is None and prediction.text_attention is None:
        raise ValueError(f"{prediction.key}: the prediction carries no attention; call Predictor.predict(..., "
                         "explain=True) with a cross_attention model")
    if weighting == "relevance":
        if prediction.image_relevance is None and prediction.text_relevance is None:
            raise ValueError(f"{prediction.key}: the prediction carries no relevance; call Predictor.predict(..., "
                             "explain=True) with a cross_attention model")
        maps, tokens = _positive_share(prediction.image_relevance, prediction.text_relevance)
        method = "attention"
    else:
        maps, tokens, method = prediction.image_attention, prediction.text_attention, "raw_attention"
    n_img = int(np.prod(maps.shape[1:])) if maps is not None else None
    n_txt = int(tokens.shape[1]) if tokens is not None else None
    return explanation_from_maps(sample, prediction, method=method, image_maps=maps, token_scores=tokens,
                                 token_spans=prediction.text_spans, labels=labels, image_relative_to=n_img,
                                 text_relative_to=n_txt, word_reduce="max")
