"""Faithfulness of explanations, measured: deletion / insertion curves against random orders, pointing game against
the synthetic ground truth, negated-vs-affirmed attribution, and modality share vs the probability drop.

- **Deletion / insertion** (Petsiuk et al., RISE, 2018): units (image token cells of the model grid, or note words)
  are removed in order of attribution — image cells filled with the mean of the image content (``fill="mean"``),
  with a strongly blurred copy (``fill="blur"``: keeps low-frequency evidence such as a broad opacity,
  so it can leave a finding's probability untouched whatever the order) or with the same cells of healthy donor
  images (``fill="healthy"``: training studies negative for every image finding, letterboxed the same way, the
  probability averaged over the donors — a removed cell shows real healthy anatomy and texture rather than a flat
  or smooth patch that a model may read as an opacity; see :func:`healthy_donors`; the default of
  :func:`evaluate_faithfulness`), note words deleted (id → [PAD],
  attention off) — and the label's probability (sigmoid of the fused logit) is followed; insertion starts from
  everything removed and restores units in the same order. AUC is the trapezoid area over the removed fraction in
  [0, 1]. A faithful map has a deletion AUC below the mean AUC of ``n_random`` random orders (and an insertion AUC
  above it).
- **Pointing game** (Zhang et al., 2018): the heatmap's peak on the ORIGINAL pixel grid falls inside the lesion mask
  dilated by half a token stride; for the note, one of the top-3 words lies inside an affirmed evidence span.
- **Negated vs affirmed**: in a note with both, every negated mention receives less attribution (mean word heat of
  its own label) than every affirmed one.
- **Modality share**: Spearman correlation, per finding, between the image (text) share and the probability drop when
  the image (note) is removed.

:func:`evaluate_faithfulness` runs all of it on a manifest split; its dict schema is documented in
``docs/explanations.md`` (the validation report's faithfulness section reads it).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clinmm.explain._forward import ImageToLogits, TextToLogits
from clinmm.explain.attention import StudyExplanation, explain_prediction, explanation_from_maps

__all__ = [
    "CurveResult",
    "curve_auc",
    "image_deletion_insertion",
    "text_deletion_insertion",
    "pointing_game_image",
    "pointing_game_text",
    "negated_below_affirmed",
    "healthy_donors",
    "evaluate_faithfulness",
    "summary_rows",
    "METHODS",
]

logger = logging.getLogger(__name__)

METHODS = ("attention", "raw_attention", "gradcam", "gradcam++", "hirescam", "integrated_gradients")


@dataclass
class CurveResult:
    """Deletion and insertion curves of one (study, label, modality) for one attribution order.

    Args:
        fractions: (S+1,) removed / restored fraction of units.
        deletion: (S+1,) probability as units are removed in attribution order.
        insertion: (S+1,) probability as units are restored in attribution order.
        random_deletion_auc: (R,) deletion AUCs of random orders.
        random_insertion_auc: (R,) insertion AUCs of random orders.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion_auc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    random_insertion_auc: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def deletion_auc(self) -> float:
        return curve_auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return curve_auc(self.fractions, self.insertion)

    @property
    def deletion_below_random(self) -> bool:
        return bool(self.deletion_auc < float(np.mean(self.random_deletion_auc)))

    @property
    def insertion_above_random(self) -> bool | None:
        """None when insertion was not computed."""
        if not np.isfinite(self.insertion).all():
            return None
        return bool(self.insertion_auc > float(np.mean(self.random_insertion_auc)))


def curve_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under ``y`` over ``x`` (numpy's ``trapezoid``; x in [0, 1])."""
    return float(np.trapezoid(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)))


def _steps(n_units: int, max_steps: int) -> np.ndarray:
    """Unit counts removed at each step: 0 … n_units in at most ``max_steps`` steps."""
    s = min(n_units, max_steps)
    return np.unique(np.round(np.linspace(0, n_units, s + 1)).astype(int))


def _orders(scores: np.ndarray, n_random: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The attribution order (highest first, ties by position) followed by ``n_random`` random permutations."""
    n = scores.shape[0]
    attributed = np.lexsort((np.arange(n), -scores))
    return [attributed] + [rng.permutation(n) for _ in range(n_random)]


@torch.no_grad()
def _run_chunks(fn, items: list, chunk: int) -> np.ndarray:
    out = [fn(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    return np.concatenate(out) if out else np.zeros(0)


def _curves(orders: list[np.ndarray], counts: np.ndarray, prob_of_kept, *, insertion: bool = True,
            ) -> tuple[np.ndarray, np.ndarray]:
    """(orders, steps) deletion and insertion probabilities; ``prob_of_kept(list of bool (U,) arrays)`` scores.
    Without ``insertion`` the insertion array is NaN (not computed)."""
    n = orders[0].shape[0]
    keeps_del, keeps_ins = [], []
    for order in orders:
        for k in counts:
            kept = np.ones(n, dtype=bool)
            kept[order[:k]] = False
            keeps_del.append(kept)
            keeps_ins.append(~kept)
    probs = prob_of_kept(keeps_del + keeps_ins if insertion else keeps_del)
    m = len(orders) * len(counts)
    ins = probs[m:] if insertion else np.full(m, np.nan)
    return probs[:m].reshape(len(orders), len(counts)), ins.reshape(len(orders), len(counts))


def _result(fractions: np.ndarray, dele: np.ndarray, ins: np.ndarray) -> CurveResult:
    return CurveResult(fractions=fractions, deletion=dele[0], insertion=ins[0],
                       random_deletion_auc=np.array([curve_auc(fractions, d) for d in dele[1:]]),
                       random_insertion_auc=np.array([curve_auc(fractions, d) for d in ins[1:]]))


class _ImageCurves:
    """Deletion / insertion probabilities of one (study, label) over the image token cells, for any unit orders."""

    def __init__(self, scorer, image: torch.Tensor, grid: tuple[int, int], *, label_index: int,
                 content: torch.Tensor | None, max_steps: int, chunk: int, insertion: bool = True,
                 fill: str = "mean", reference: torch.Tensor | None = None) -> None:
        gh, gw = grid
        self.insertion = insertion
        _, _, h, w = image.shape
        device = image.device
        self.scorer, self.image, self.label_index, self.chunk = scorer, image, label_index, chunk
        base = _removed(image, content, fill, reference=reference)
        if content is not None:
            base = base * content.to(device, base.dtype)
        self.base = base  # (K, 1, H, W) what a removed cell shows: K = 1, or one image per healthy donor
        ys = torch.arange(h, device=device) * gh // h  # (H,) token row of each pixel row
        xs = torch.arange(w, device=device) * gw // w  # (W,)
        unit_of = (ys[:, None] * gw + xs[None, :]).flatten()  # (H*W,)
        self.cells = F.one_hot(unit_of, gh * gw).T.float()  # (U, H*W) which pixels each unit covers
        self.n_units = gh * gw
        self.counts = _steps(self.n_units, max_steps)

    @torch.no_grad()
    def _probs(self, keeps: list[np.ndarray]) -> np.ndarray:
        _, _, h, w = self.image.shape

        def run(batch: list[np.ndarray]) -> np.ndarray:
            kept = torch.as_tensor(np.stack(batch), device=self.image.device).float()  # (N, U)
            pix = (kept @ self.cells).view(-1, 1, 1, h, w) > 0  # (N, 1, 1, H, W) kept pixels
            x = torch.where(pix, self.image[None], self.base[None])  # (N, K, 1, H, W)
            n, k = x.shape[:2]
            p = torch.sigmoid(self.scorer(x.view(n * k, 1, h, w))[:, self.label_index].float())  # (N*K,)
            return p.view(n, k).mean(1).cpu().numpy()  # (N,) mean over the fills

        return _run_chunks(run, keeps, self.chunk)

    def __call__(self, orders: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return _curves(orders, self.counts, self._probs, insertion=self.insertion)


def image_deletion_insertion(scorer, image: torch.Tensor, unit_scores: np.ndarray, *, label_index: int,
                             content: torch.Tensor | None = None, n_random: int = 10, max_steps: int = 16,
                             seed: int = 0, chunk: int = 64, fill: str = "mean",
                             reference: torch.Tensor | None = None) -> CurveResult:
    """Deletion / insertion over the token cells of the image grid, with a random-order baseline.

    Args:
        scorer: ``(N, 1, H, W) → (N, C)`` logits with the note fixed (e.g. :class:`ImageToLogits`).
        image: (1, 1, H, W) model input.
        unit_scores: (gh, gw) attribution per token cell (higher = more evidence).
        label_index: the label whose probability is followed.
        content: (H, W) bool, the unpadded image region (removed pixels outside it stay 0).
        n_random: random orders for the baseline.
        max_steps: at most this many deletion steps.
        seed: random seed of the random orders.
        chunk: images per forward pass.
        fill: what a removed cell shows: ``mean`` (the mean of the image content), ``blur`` or ``healthy`` (the
            same cells of each ``reference`` image; the probability is averaged over them).
        reference: (K, 1, H, W) healthy donor images on the model grid, letterboxed like ``image``
            (:func:`healthy_donors`); required by ``fill="healthy"``.
    """
    gh, gw = unit_scores.shape
    rng = np.random.default_rng(seed)
    curves = _ImageCurves(scorer, image, (gh, gw), label_index=label_index, content=content, max_steps=max_steps,
                          chunk=chunk, fill=fill, reference=reference)
    orders = _orders(np.asarray(unit_scores, dtype=np.float64).reshape(-1), n_random, rng)
    dele, ins = curves(orders)
    return _result(curves.counts / curves.n_units, dele, ins)


DELETION_FILLS = ("mean", "blur", "healthy")


def _check_fill(fill: str) -> None:
    if fill not in DELETION_FILLS:
        raise ValueError(f"deletion fill: expected one of {list(DELETION_FILLS)}, got {fill!r}")


def _removed(image: torch.Tensor, content: torch.Tensor | None, fill: str, *,
             reference: torch.Tensor | None = None) -> torch.Tensor:
    """(K, 1, H, W) what removed cells show: the mean of the image content or a strongly blurred copy (K = 1), or the
    K healthy donor images."""
    _check_fill(fill)
    if fill == "healthy":
        if reference is None:
            raise ValueError("deletion fill 'healthy' needs donor images (see healthy_donors)")
        if reference.dim() != 4 or reference.shape[1:] != image.shape[1:]:
            raise ValueError(f"deletion fill 'healthy': reference shape {tuple(reference.shape)} does not hold "
                             f"(K, {', '.join(str(d) for d in image.shape[1:])}) donor images")
        return reference.to(image.device, image.dtype)
    if fill == "blur":
        from clinmm.explain.attribution import blur_baseline

        return blur_baseline(image)
    region = image[0, 0][content.to(image.device)] if content is not None else image
    return torch.full_like(image, float(region.mean()))


def _word_token_mask(ids: torch.Tensor, am: torch.Tensor, offsets: torch.Tensor, words: list[tuple[int, int]],
                     special: set[int]) -> torch.Tensor:
    """(W, K, L) bool: every copy (across overlapping chunks) of the tokens that overlap each word."""
    real = (am > 0) & (offsets[..., 1] > offsets[..., 0])  # (K, L)
    for sid in special:
        real &= ids != sid
    s = torch.tensor([a for a, _ in words])[:, None, None]  # (W, 1, 1)
    e = torch.tensor([b for _, b in words])[:, None, None]
    return real[None] & (offsets[None, ..., 0] < e) & (offsets[None, ..., 1] > s)  # (W, K, L)


class _TextCurves:
    """Deletion / insertion probabilities of one (study, label) over the note's words, for any word orders."""

    def __init__(self, scorer, ids: torch.Tensor, am: torch.Tensor, keep: torch.Tensor, offsets: torch.Tensor,
                 words: list[tuple[int, int]], *, label_index: int, pad_id: int, special: set[int], max_steps: int,
                 chunk: int, insertion: bool = True) -> None:
        self.insertion = insertion
        self.scorer, self.ids, self.am, self.keep = scorer, ids, am, keep
        self.label_index, self.pad_id, self.chunk = label_index, pad_id, chunk
        self.wmask = _word_token_mask(ids.cpu(), am.cpu(), offsets.cpu(), words, special).to(ids.device)  # (W,K,L)
        self.n_units = len(words)
        self.counts = _steps(self.n_units, max_steps)

    @torch.no_grad()
    def _probs(self, keeps: list[np.ndarray]) -> np.ndarray:
        k, length = self.ids.shape

        def run(batch: list[np.ndarray]) -> np.ndarray:
            kept = torch.as_tensor(np.stack(batch), device=self.ids.device)  # (N, W)
            removed = (((~kept).float() @ self.wmask.flatten(1).float()) > 0).view(-1, k, length)  # (N, K, L)
            b_ids = torch.where(removed, torch.full_like(self.ids, self.pad_id), self.ids)  # (N, K, L)
            b_am = torch.where(removed, torch.zeros_like(self.am), self.am)
            b_keep = self.keep & ~removed
            return torch.sigmoid(self.scorer(b_ids, b_am, b_keep)[:, self.label_index].float()).cpu().numpy()

        return _run_chunks(run, keeps, self.chunk)

    def __call__(self, orders: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return _curves(orders, self.counts, self._probs, insertion=self.insertion)


def text_deletion_insertion(scorer, ids: torch.Tensor, am: torch.Tensor, keep: torch.Tensor, offsets: torch.Tensor,
                            words: list[tuple[int, int]], word_scores: np.ndarray, *, label_index: int,
                            pad_id: int = 0, special: set[int] | None = None, n_random: int = 10,
                            max_steps: int = 16, seed: int = 0, chunk: int = 32) -> CurveResult:
    """Deletion / insertion over the note's words (a removed word: its tokens → [PAD], attention off, not kept).

    Args:
        scorer: ``(input_ids, attention_mask, keep) (N, K, L) → (N, C)`` logits with the image fixed
            (e.g. :class:`TextToLogits`).
        ids: (K, L) token ids; am: (K, L) attention mask; keep: (K, L) kept copies; offsets: (K, L, 2) char spans.
        words: (start, end) of each unit word.
        word_scores: (W,) attribution per word.
        label_index: the label whose probability is followed.
        pad_id: id written over removed tokens.
        special: special token ids (never removed).
        n_random, max_steps, seed, chunk: as in :func:`image_deletion_insertion`.
    """
    rng = np.random.default_rng(seed)
    curves = _TextCurves(scorer, ids, am, keep, offsets, words, label_index=label_index, pad_id=pad_id,
                         special=special or set(), max_steps=max_steps, chunk=chunk)
    dele, ins = curves(_orders(np.asarray(word_scores, dtype=np.float64), n_random, rng))
    return _result(curves.counts / curves.n_units, dele, ins)


def _method_result(curves, scores: np.ndarray, random_curves: tuple[np.ndarray, np.ndarray]) -> CurveResult:
    """One method's curve against random curves computed once per (study, label)."""
    dele, ins = curves(_orders(np.asarray(scores, dtype=np.float64).reshape(-1), 0, np.random.default_rng(0)))
    return _result(curves.counts / curves.n_units, np.concatenate([dele, random_curves[0]]),
                   np.concatenate([ins, random_curves[1]]))


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    if radius <= 0:
        return mask.astype(bool)
    return distance_transform_edt(~mask.astype(bool)) <= radius


def pointing_game_image(heat: np.ndarray, mask: np.ndarray, *, radius: float = 0.0) -> bool:
    """Is the maximum of ``heat`` (H0, W0) inside ``mask`` (H0, W0) dilated by ``radius`` pixels?"""
    if heat.shape != mask.shape:
        raise ValueError(f"pointing game: heatmap shape {heat.shape} differs from mask shape {mask.shape}")
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(_dilate(mask, radius)[peak])


def pointing_game_text(top_words: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> bool:
    """Does any of ``top_words`` (start, end) overlap any evidence span (start, end)?"""
    return any(ws < e and we > s for ws, we in top_words for s, e in spans)


def _span_attribution(words, start: int, end: int, *, use: str) -> float:
    vals = [getattr(w, use) for w in words if w.start < end and w.end > start and not w.is_punctuation]
    return float(np.mean(vals)) if vals else 0.0


def negated_below_affirmed(explanation: StudyExplanation, mentions: list[dict], *, use: str = "heat") -> bool | None:
    """Every negated mention gets less attribution (from its own label) than every affirmed one; None if not both.

    Args:
        explanation: the study's explanation (labels named in ``mentions`` must be in it).
        mentions: ``[{"label", "start", "end", "polarity"}]`` of the note.
        use: ``heat`` (what is displayed: probability-weighted) or ``score`` (raw attribution).
    """
    names = {x.label for x in explanation.labels}
    neg = [m for m in mentions if m["polarity"] == "negated" and m["label"] in names]
    aff = [m for m in mentions if m["polarity"] == "affirmed" and m["label"] in names]
    if not neg or not aff:
        return None
    a_neg = [_span_attribution(explanation.label(m["label"]).words, m["start"], m["end"], use=use) for m in neg]
    a_aff = [_span_attribution(explanation.label(m["label"]).words, m["start"], m["end"], use=use) for m in aff]
    return bool(max(a_neg) < min(a_aff))


# ----------------------------------------------------------------------------------------------------------------
# Whole split


def _rate(values: list[bool]) -> dict:
    n = len(values)
    return {"rate": (sum(values) / n) if n else None, "n": n, "hits": int(sum(values))}


def _pool(grid_map: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) map → (gh, gw) mean per token cell."""
    t = torch.as_tensor(grid_map, dtype=torch.float32)[None, None]
    return F.adaptive_avg_pool2d(t, grid)[0, 0].numpy()


def _load_mask(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path)) > 127


def _spearman(x: np.ndarray, y: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    n = int(len(x))
    if n < 3 or np.std(x) == 0 or np.std(y) == 0:
        return {"spearman": None, "p_value": None, "n": n}
    r = spearmanr(x, y)
    return {"spearman": float(r.statistic), "p_value": float(r.pvalue), "n": n}


def _geometry(sample) -> tuple:
    box = sample.letterbox
    return (box.size, *box.resized, box.pad_top, box.pad_left)


def healthy_donors(predictor, records: Sequence, *, image_label_indices: Sequence[int], modalities: Sequence[str] = (),
                   max_studies: int = 256, per_geometry: int = 32) -> dict[tuple, torch.Tensor]:
    """Healthy donor images for ``fill="healthy"``: model inputs of studies negative for every image finding, grouped
    by letterbox geometry (a donor must put its content exactly where the study's is).

    Args:
        predictor: a :class:`~clinmm.inference.Predictor` (its preprocessing is used, so donors lie on the model
            grid, letterboxed like every input).
        records: labelled manifest records to draw from (use the training split, never the split under test).
        image_label_indices: indices of the labels whose evidence is in the image; a record qualifies when all of
            them are 0 (not unknown).
        modalities: accepted DICOM modalities (empty: any).
        max_studies: read at most this many qualifying studies (in record order).
        per_geometry: keep at most this many donors per geometry.

    Returns:
        geometry ``(size, rows, cols, pad_top, pad_left)`` → (D, 1, H, W) float donor images on the CPU.

    Raises:
        ValueError: no record qualifies (no image-negative 2D study of an accepted modality).
    """
    pools: dict[tuple, list[torch.Tensor]] = {}
    n = 0
    for rec in records:
        if n >= max_studies:
            break
        labels = np.asarray(rec.labels, dtype=np.float64)
        if not image_label_indices or not all(labels[c] == 0 for c in image_label_indices):
            continue
        sample = predictor.prepare(rec.image_path, None, key=rec.study_id)
        if sample.image is None or sample.image.dim() != 3 or sample.letterbox is None:  # (1, H, W): 2D only
            continue
        if modalities and sample.meta.get("Modality") not in modalities:
            continue
        n += 1
        pool = pools.setdefault(_geometry(sample), [])
        if len(pool) < per_geometry:
            pool.append(predictor.collate([sample]).inputs.image[0].float())  # (1, H, W)
    if not pools:
        raise ValueError("healthy donors: no 2D study negative for every image finding among the "
                         f"{len(records)} records given")
    return {g: torch.stack(v) for g, v in pools.items()}


def evaluate_faithfulness(model, manifest: str | Path, *, ground_truth: str | Path | None = None,
                          split: str = "test", methods: Sequence[str] = METHODS, n_random: int = 10,
                          max_studies: int | None = None, max_steps: int = 16, ig_steps: int = 32,
                          internal_batch_size: int = 16, image_labels: Sequence[str] | None = None,
                          text_labels: Sequence[str] | None = None, lesion_area: tuple[float, float] = (0.02, 0.10),
                          insertion: bool = True, seed: int = 0, deletion_fill: str = "healthy",
                          n_donors: int = 3) -> dict:
    """Measure explanation faithfulness on a labelled manifest split.

    Args:
        model: a :class:`~clinmm.inference.Predictor` or a checkpoint directory.
        manifest: the labelled manifest (CSV / Parquet).
        ground_truth: folder with ``masks/<study_id>__<label>.png`` and ``evidence.json`` (default: the manifest's
            ``ground_truth/`` when present; without it only deletion/insertion and modality share are computed).
        split: manifest split.
        methods: any of :data:`METHODS` (``attention``, ``raw_attention``, ``gradcam``, ``gradcam++``, ``hirescam``,
            ``integrated_gradients``).
        n_random: random orders per deletion/insertion baseline (≥ 10 for the acceptance figure).
        max_studies: evaluate only the first N studies of the split (quick runs).
        max_steps: deletion steps per curve.
        ig_steps: integrated-gradients steps.
        internal_batch_size: IG chunk size.
        image_labels: labels whose evidence is in the image (default: labels with any mask file).
        text_labels: labels whose evidence is in the note (default: labels named in evidence.json).
        lesion_area: (lo, hi) mask area fraction of the image for the image pointing-game target.
        insertion: also compute insertion curves (doubles the curve cost).
        seed: seed of the random orders.
        deletion_fill: what a removed image cell shows (``mean``, ``blur`` or ``healthy``, see the module docstring);
            ``healthy`` (default) draws ``n_donors`` donors per study from up to 256 image-negative studies of the
            manifest's ``train`` split with the study's letterbox geometry (:func:`healthy_donors`); a study whose
            geometry has no donor gets no image deletion curve (counted in ``skipped["no_healthy_donor"]``); a
            manifest without any such training study falls back to ``mean`` (logged; the result's
            ``deletion_fill`` says which fill was used).
        n_donors: healthy donors per study (``deletion_fill="healthy"``).

    Returns:
        The dict documented in ``docs/explanations.md`` (section "Faithfulness dict").
    """
    from clinmm.data.manifest import read_manifest
    from clinmm.explain.attribution import integrated_gradients_image, integrated_gradients_text
    from clinmm.explain.gradcam import CAM_METHODS, gradcam_maps
    from clinmm.inference import Predictor

    _check_fill(deletion_fill)  # before the model loads
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"evaluate_faithfulness: unknown methods {unknown}; expected some of {list(METHODS)}")
    predictor = model if isinstance(model, Predictor) else Predictor.from_path(model, keep_display=False)
    labels = predictor.labels
    net = predictor.loaded.model
    net.eval()
    man = read_manifest(manifest, labels=labels)
    records = man.split(split)
    if max_studies is not None:
        records = records[:max_studies]
    gt = Path(ground_truth) if ground_truth is not None else Path(manifest).parent / "ground_truth"
    has_gt = gt.is_dir()
    evidence = json.loads((gt / "evidence.json").read_text(encoding="utf-8")) if has_gt and (
        gt / "evidence.json").is_file() else {}
    mask_files = {p.name for p in (gt / "masks").glob("*.png")} if has_gt else set()
    if image_labels is None:
        image_labels = [x for x in labels if any(name.endswith(f"__{x}.png") for name in mask_files)]
    if text_labels is None:
        text_labels = [x for x in labels if any(m["label"] == x for ms in evidence.values() for m in ms)]
    tok = net.text_encoder.tokenizer if net.text_encoder is not None else None
    special = set(int(i) for i in (getattr(tok, "all_special_ids", None) or [])) if tok is not None else set()
    pad_id = predictor.pad_id
    rng = np.random.default_rng(seed)
    in_scope = list((predictor.loaded.scope or {}).get("modalities") or [])
    donors: dict[tuple, torch.Tensor] = {}
    if deletion_fill == "healthy":
        if n_donors < 1:
            raise ValueError(f"evaluate_faithfulness: n_donors must be >= 1, got {n_donors}")
        try:
            donors = healthy_donors(predictor, man.split("train"),
                                    image_label_indices=[c for c, x in enumerate(labels) if x in image_labels],
                                    modalities=in_scope)
            logger.info("faithfulness: healthy donors for %d letterbox geometries (%d images)", len(donors),
                        sum(len(v) for v in donors.values()))
        except ValueError as err:
            logger.warning("faithfulness: %s in the manifest's train split; removed image cells show the image mean "
                           "instead", err)
            deletion_fill = "mean"

    acc: dict[str, dict[str, list]] = {m: {} for m in methods}

    def add(method: str, key: str, value) -> None:
        acc[method].setdefault(key, []).append(value)

    share_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def evaluate_one(sample, rec) -> tuple | None:
        """One study: updates ``acc``; returns its modality-share row (or None)."""
        share_row = None
        batch = predictor.collate([sample])
        pred = predictor.predict_batch(batch, explain=True)[0]
        if pred.image_present and pred.text_present and pred.modality_share is not None:
            p_no_img = predictor.predict_batch(batch, drop_image=True)[0].probs
            p_no_txt = predictor.predict_batch(batch, drop_text=True)[0].probs
            share_row = (pred.modality_share, pred.probs - p_no_img, pred.probs - p_no_txt, np.asarray(rec.labels))
        positives = [c for c, y in enumerate(rec.labels) if y == 1]
        if not positives:
            return share_row
        inputs = batch.inputs
        exps: dict[str, StudyExplanation] = {}
        if pred.image_attention is not None or pred.text_attention is not None:
            if "attention" in methods:
                exps["attention"] = explain_prediction(sample, pred)
            if "raw_attention" in methods:
                exps["raw_attention"] = explain_prediction(sample, pred, weighting="raw")
        grid = tuple(pred.image_attention.shape[1:]) if pred.image_attention is not None else None
        img_pos = [c for c in positives if labels[c] in image_labels] if pred.image_present else []
        txt_pos = [c for c in positives if labels[c] in text_labels] if pred.text_present else []
        txt_all = [c for c, name in enumerate(labels) if name in text_labels] if pred.text_present else []
        mentions = evidence.get(rec.study_id, [])
        both = {m["polarity"] for m in mentions} >= {"negated", "affirmed"}
        if grid is None and net.image_encoder is not None and pred.image_present:
            with torch.no_grad():
                grid = tuple(net.image_encoder.forward_features(inputs.image[:1].to(predictor.loaded.device)).grid)
        for method in methods:
            if method in ("attention", "raw_attention"):
                continue
            img_maps = txt_scores = None
            cnn = net.image_encoder is not None and not getattr(net.image_encoder, "is_vit", False)
            if method in CAM_METHODS and img_pos and cnn:
                img_maps = np.zeros((len(labels), *inputs.image.shape[-2:]), dtype=np.float32)
                img_maps[img_pos] = gradcam_maps(net, inputs, label_indices=img_pos, method=method).numpy()
            if method == "integrated_gradients":
                if img_pos and grid is not None:
                    img_maps = np.zeros((len(labels), *grid), dtype=np.float32)  # pooled to the token grid
                    for c in img_pos:
                        img_maps[c] = _pool(integrated_gradients_image(
                            net, inputs, label_index=c, n_steps=ig_steps, internal_batch_size=internal_batch_size),
                            grid)
                ig_txt = txt_all if both else txt_pos
                if ig_txt:
                    txt_scores = np.zeros((len(labels), len(pred.text_spans)), dtype=np.float32)
                    for c in ig_txt:
                        txt_scores[c] = integrated_gradients_text(net, inputs, label_index=c, n_steps=ig_steps,
                                                                  internal_batch_size=internal_batch_size,
                                                                  pad_id=pad_id)
            exps[method] = explanation_from_maps(sample, pred, method=method, image_maps=img_maps,
                                                 token_scores=txt_scores, token_spans=pred.text_spans)
        device = predictor.loaded.device
        # ---- image: pointing game + deletion / insertion
        if img_pos and grid is not None and len(grid) == 2:
            scorer = ImageToLogits(model=net, inputs=inputs).eval()
            image = inputs.image[:1].to(device)
            box = sample.letterbox
            content = torch.zeros(image.shape[-2:], dtype=torch.bool)
            content[box.pad_top : box.pad_top + box.resized[0], box.pad_left : box.pad_left + box.resized[1]] = True
            stride_orig = (box.size / grid[1]) / box.scale  # original pixels per token
            reference, curves_ok = None, True
            if deletion_fill == "healthy":
                pool = donors.get(_geometry(sample))
                if pool is None:  # no donor letterboxed like this study: pointing game only
                    skipped["no_healthy_donor"] = skipped.get("no_healthy_donor", 0) + 1
                    curves_ok = False
                else:
                    pick = np.sort(rng.choice(len(pool), size=min(n_donors, len(pool)), replace=False))
                    reference = pool[torch.as_tensor(pick)].to(device)  # (K, 1, H, W)
            for c in img_pos:
                curves = rand = None
                if curves_ok:
                    curves = _ImageCurves(scorer, image, grid, label_index=c, content=content, max_steps=max_steps,
                                          chunk=max(8, 64 // (1 if reference is None else len(reference))),
                                          insertion=insertion, fill=deletion_fill, reference=reference)
                    rand = curves([rng.permutation(grid[0] * grid[1]) for _ in range(n_random)])
                mask_path = gt / "masks" / f"{rec.study_id}__{labels[c]}.png"
                mask = _load_mask(mask_path) if has_gt and mask_path.is_file() else None
                for method, exp in exps.items():
                    le = exp.labels[c]
                    if le.image is None:
                        continue
                    g = le.image.grid
                    if not np.any(g) and method not in ("attention", "raw_attention"):
                        continue
                    if curves is not None:
                        unit = g if g.shape == grid else _pool(g, grid)
                        add(method, f"del_img:{labels[c]}", _method_result(curves, unit, rand))
                    if mask is not None and mask.shape == le.image.heat.shape:
                        area = float(mask.mean())
                        hit = pointing_game_image(le.image.heat, mask, radius=stride_orig / 2)
                        add(method, f"pg_all:{labels[c]}", hit)
                        if lesion_area[0] <= area <= lesion_area[1]:
                            add(method, f"pg_img:{labels[c]}", hit)
        # ---- text: pointing game + deletion / insertion + negated vs affirmed
        if pred.text_present and sample.note_text:
            for method, exp in exps.items():
                if method in CAM_METHODS or not both:  # class activation maps: no note part
                    continue
                for use in ("heat", "score"):
                    r = negated_below_affirmed(_restrict(exp, txt_all), mentions, use=use)
                    if r is not None:
                        add(method, f"neg_aff_{use}", r)
            if txt_pos:
                scorer_t = TextToLogits(model=net, inputs=inputs).eval()
                ids, am, keep = (inputs.input_ids[0].to(device), inputs.attention_mask[0].to(device),
                                 inputs.keep[0].to(device))
                offsets = batch.offsets[0]
                for c in txt_pos:
                    spans = [(m["start"], m["end"]) for m in mentions
                             if m["label"] == labels[c] and m["polarity"] == "affirmed"]
                    rand = None
                    for method, exp in exps.items():
                        le = exp.labels[c]
                        if not le.words:
                            continue
                        units = [w for w in le.words if not w.is_punctuation]
                        if rand is None:
                            curves_t = _TextCurves(scorer_t, ids, am, keep, offsets, [(w.start, w.end) for w in units],
                                                   label_index=c, pad_id=pad_id, special=special,
                                                   max_steps=max_steps, chunk=32, insertion=insertion)
                            unit_spans = [(w.start, w.end) for w in units]
                            rand = curves_t([rng.permutation(len(units)) for _ in range(n_random)])
                        if [(w.start, w.end) for w in units] != unit_spans:
                            continue  # every method sees the same words; guard anyway
                        res = _method_result(curves_t, np.array([w.score for w in units]), rand)
                        add(method, f"del_txt:{labels[c]}", res)
                        if spans:
                            add(method, f"pg_txt:{labels[c]}",
                                pointing_game_text([(w.start, w.end) for w in le.top_words(3)], spans))
        return share_row

    skipped = {"out_of_scope": 0, "failed": 0}
    for i, rec in enumerate(records):
        if (i + 1) % 10 == 0:
            logger.info("faithfulness: %d / %d studies", i + 1, len(records))
        sample = predictor.prepare(rec.image_path, rec.note_text, key=rec.study_id, labels=rec.labels)
        if sample.image is not None and in_scope and sample.meta.get("Modality") not in in_scope:
            skipped["out_of_scope"] += 1  # as scoring and training do: a model is not explained outside its scope
            continue
        try:
            share_row = evaluate_one(sample, rec)
        except (ValueError, RuntimeError) as err:
            skipped["failed"] += 1
            logger.warning("faithfulness: study %s skipped: %s", rec.study_id, err)
            continue
        if share_row is not None:
            share_rows.append(share_row)
    summary = _summarise(acc, share_rows, labels=labels, methods=methods, split=split, n_studies=len(records),
                         n_random=n_random, image_labels=list(image_labels), text_labels=list(text_labels),
                         lesion_area=lesion_area, has_gt=has_gt, skipped=skipped, deletion_fill=deletion_fill,
                         n_donors=n_donors if deletion_fill == "healthy" else 0)
    fc = predictor.loaded.config.fusion
    summary["relevance_games"] = {"image": fc.image_relevance_game, "text": fc.text_relevance_game}
    summary["text_relevance_rollout"] = fc.text_relevance_rollout
    carried = predictor.carries_image_relevance
    summary["image_relevance_carry"] = fc.image_relevance_carry if carried else "none"
    summary["image_relevance_carry_subcells"] = fc.image_relevance_carry_subcells if carried else None
    summary["image_relevance_carry_permutations"] = fc.image_relevance_carry_permutations if carried else None
    summary["image_relevance_carry_window"] = fc.image_relevance_carry_window if carried else None
    return summary


def _restrict(exp: StudyExplanation, keep_idx: list[int]) -> StudyExplanation:
    return StudyExplanation(key=exp.key, method=exp.method, labels=[exp.labels[c] for c in keep_idx],
                            image_present=exp.image_present, text_present=exp.text_present, scale=exp.scale)


def _mean_or_none(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _curve_summary(results: list[CurveResult]) -> dict:
    if not results:
        return {"n": 0, "deletion_below_random": None, "insertion_above_random": None}
    return {
        "n": len(results),
        "deletion_below_random": float(np.mean([r.deletion_below_random for r in results])),
        "insertion_above_random": _mean_or_none([r.insertion_above_random for r in results]),
        "deletion_auc_mean": float(np.mean([r.deletion_auc for r in results])),
        "random_deletion_auc_mean": float(np.mean([r.random_deletion_auc.mean() for r in results])),
        "insertion_auc_mean": float(np.mean([r.insertion_auc for r in results])),
        "random_insertion_auc_mean": float(np.mean([r.random_insertion_auc.mean() for r in results])),
    }


def _summarise(acc, share_rows, *, labels, methods, split, n_studies, n_random, image_labels, text_labels,
               lesion_area, has_gt, skipped, deletion_fill, n_donors=0) -> dict:
    out: dict = {
        "split": split, "n_studies": n_studies, "n_random": n_random, "ground_truth": has_gt, "skipped": dict(skipped),
        "deletion_fill": deletion_fill, "healthy_donors_per_study": n_donors,
        "image_labels": image_labels, "text_labels": text_labels, "lesion_area": list(lesion_area),
        "targets": {"pointing_image": 0.8, "pointing_text_top3": 0.8, "negated_below_affirmed": 0.8,
                    "deletion_below_random": 0.9},
        "methods": {},
    }
    for method in methods:
        a = acc[method]

        def gather(prefix: str, names: list[str]) -> tuple[list, dict]:
            allv, by = [], {}
            for name in names:
                vals = a.get(f"{prefix}:{name}", [])
                allv += vals
                by[name] = vals
            return allv, by

        m: dict = {}
        for key, prefix, names in (("pointing_image", "pg_img", image_labels),
                                   ("pointing_image_all_sizes", "pg_all", image_labels),
                                   ("pointing_text_top3", "pg_txt", text_labels)):
            allv, by = gather(prefix, names)
            m[key] = {**_rate(allv), "by_label": {k: _rate(v) for k, v in by.items()}}
        m["negated_below_affirmed"] = {"displayed_heat": _rate(a.get("neg_aff_heat", [])),
                                       "raw_score": _rate(a.get("neg_aff_score", []))}
        m["deletion"] = {}
        for mod, prefix, names in (("image", "del_img", image_labels), ("text", "del_txt", text_labels)):
            allv, by = gather(prefix, names)
            m["deletion"][mod] = {**_curve_summary(allv), "by_label": {k: _curve_summary(v) for k, v in by.items()}}
        out["methods"][method] = m
    share: dict = {}
    if share_rows:
        sh = np.stack([r[0] for r in share_rows])  # (N, C, 2)
        d_img = np.stack([r[1] for r in share_rows])  # (N, C)
        d_txt = np.stack([r[2] for r in share_rows])  # (N, C)
        for c, name in enumerate(labels):
            share[name] = {"image": _spearman(sh[:, c, 0], d_img[:, c]), "text": _spearman(sh[:, c, 1], d_txt[:, c])}
    out["modality_share"] = share
    return _finite(out)


def summary_rows(result: dict) -> list[dict]:
    """The headline figures of :func:`evaluate_faithfulness`'s result, one row per (measure, method): what the report
    shows. Each row: ``measure``, ``method``, ``hits``, ``n``, ``rate`` (None without cases), ``target``, ``met``
    (None without cases), ``detail`` (per-label counts)."""
    targets = result.get("targets", {})
    rows = []

    def add(measure, method, rate_block, target_key, by_label=None):
        n = int(rate_block.get("n") or 0)
        rate = rate_block.get("rate") if n else None
        detail = ", ".join(f"{k} {int(v.get('hits') or 0)}/{int(v.get('n') or 0)}" for k, v in (by_label or {}).items()
                           if v.get("n"))
        rows.append({"measure": measure, "method": method, "hits": int(rate_block.get("hits") or 0), "n": n,
                     "rate": rate, "target": targets.get(target_key),
                     "met": None if rate is None else bool(rate >= targets.get(target_key, 0.0)), "detail": detail})

    for method, m in result.get("methods", {}).items():
        add("image pointing game (lesion 2-10 % of the image)", method, m["pointing_image"], "pointing_image",
            m["pointing_image"].get("by_label"))
        add("a top-3 word inside the evidence span", method, m["pointing_text_top3"], "pointing_text_top3",
            m["pointing_text_top3"].get("by_label"))
        add("negated mention below the affirmed one", method, m["negated_below_affirmed"]["displayed_heat"],
            "negated_below_affirmed")
        for mod in ("image", "text"):
            d = m["deletion"][mod]
            n = int(d.get("n") or 0)
            rate = d.get("deletion_below_random") if n else None
            hits = int(round(rate * n)) if rate is not None else 0
            by = {k: {"hits": int(round((v.get("deletion_below_random") or 0) * (v.get("n") or 0))), "n": v.get("n")}
                  for k, v in d.get("by_label", {}).items()}
            add(f"deletion AUC below {result.get('n_random', 10)} random orders ({mod})", method,
                {"n": n, "hits": hits, "rate": rate}, "deletion_below_random", by)
    return rows


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
