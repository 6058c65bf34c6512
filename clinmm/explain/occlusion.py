"""The image tokens' relevance carried back to the image cells it came from, by occlusion with a healthy reference.

Every image token of a convolutional encoder sees most of the image, and the fusion reads the tokens without their
positions, so the token that carries a lesion to a label can be the lesion's neighbour: the Shapley value then lands
next to the lesion, on a side each training seed picks (docs/explanations.md, "Measured (fourteenth session)"). The
note has the same problem with contextual tokens and solves it by attention rollout (:mod:`clinmm.explain.rollout`);
the image's counterpart here asks the encoder where each token's relevance comes from:

1. replace one cell of the token grid in the input by the same cell of a **healthy reference** (the mean of healthy
   training images' content, :func:`fit_healthy_reference`) — the cell then shows healthy anatomy, not a flat or
   blurred patch that a model may read as an opacity;
2. run the encoder and the fusion again and read every token's relevance;
3. token ``t``'s positive relevance ``r⁺_t`` is shared among the cells ``p`` in proportion to how much replacing ``p``
   lowers it, ``Δ⁺_pt = max(0, r⁺_t − r⁺_t(x with p replaced))``; its negative relevance likewise, with ``r⁻ =
   max(0, −r)``; a token whose relevance no replacement lowers keeps it on its own cell.

With ``subcells`` = k the replaced windows, still one cell in size, move by 1/k of a cell, and each window's share is
spread evenly over the k × k sub-cells it covers: a map k × finer than the token grid, for lesions that straddle
cells. With ``window`` = m sub-cells the windows are m / k cells wide (the demo: m = 3, k = 2, a cell and a half,
which covers a nodule that straddles two cells) and still move by 1/k of a cell. The carried map keeps every label's
sum (each token's positive and negative parts are shared out whole), so it still adds up to the logit minus the logit
without the image, and the modality share is untouched. It costs one encoder and fusion pass per window that holds
image content ((k·h − m + 1)·(k·w − m + 1) at most: 64 on an 8 × 8 grid with k = m = 1, 225 with k = m = 2, 196
with k = 2 and m = 3), and one for the image as it is, in chunks. The token relevance of these passes is
sampled from fewer orderings than the shown one (``permutations``, 4 against 32): every pass uses the same
orderings, so their sampling error largely cancels in the drops, and the fusion head's cost, most of the carry's,
falls eightfold. 2D images only: a 3D study keeps its token relevance as it is. Only the explanation depends on it,
never a prediction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clinmm.models.classifier import ClinmmModel, ModelInputs

__all__ = ["HealthyReference", "fit_healthy_reference", "reference_fill", "carry_image_relevance",
           "MIN_REFERENCE_STUDIES"]

logger = logging.getLogger(__name__)

MIN_REFERENCE_STUDIES = 16
"""Fewest healthy studies a reference is averaged from: fewer, and no reference is stored (one patient's image must
not travel in a checkpoint)."""


@dataclass
class HealthyReference:
    """What :func:`fit_healthy_reference` returns.

    Args:
        image: (1, S, S) the mean content of the healthy studies, each resized to S × S.
        count: how many studies it is the mean of.
    """

    image: torch.Tensor
    count: int


def _content(image: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """(1, H, W) model input → (1, rows, cols) its content inside ``box`` = (top, left, rows, cols)."""
    top, left, rows, cols = (int(v) for v in box)
    return image[:, top:top + rows, left:left + cols]


def fit_healthy_reference(samples: Sequence, *, size: int, max_studies: int = 256,
                          min_studies: int = MIN_REFERENCE_STUDIES) -> HealthyReference | None:
    """The mean of healthy studies' image content, each resized to ``size`` × ``size`` (so that it fits any
    letterbox geometry when resized back).

    Healthy: every label known and negative. Only 2D images with a letterbox are used.

    Args:
        samples: prepared :class:`~clinmm.data.dataset.Sample` s (the training split).
        size: side of the stored reference (the model input size).
        max_studies: average at most this many (the first ones, in order).
        min_studies: below this many healthy studies, return None.

    Returns:
        The reference, or None (too few healthy studies; the caller keeps the uncarried relevance).
    """
    total = torch.zeros(1, size, size, dtype=torch.float64)
    n = 0
    for s in samples:
        if n >= max_studies:
            break
        if s.image is None or s.image.dim() != 3 or s.letterbox is None or s.labels is None:
            continue
        y = np.asarray(s.labels, dtype=np.float64)
        if not (np.isfinite(y).all() and (y == 0).all()):
            continue
        box = s.letterbox
        crop = _content(s.image.float(), (box.pad_top, box.pad_left, *box.resized))  # (1, rows, cols)
        total += F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)[0].double()
        n += 1
    if n < min_studies:
        logger.warning("healthy reference: %d healthy 2D studies (every label negative) in the training split, "
                       "fewer than %d; the image relevance is not carried back by occlusion", n, min_studies)
        return None
    return HealthyReference(image=(total / n).float(), count=n)


def reference_fill(image: torch.Tensor, reference: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """(1, H, W) model input → the same with its content inside ``box`` (top, left, rows, cols) replaced by the
    reference (1, S, S) resized to the box; the letterbox padding stays the image's own."""
    top, left, rows, cols = (int(v) for v in box)
    fill = image.clone()
    ref = F.interpolate(reference[None].to(image.device, torch.float32), size=(rows, cols), mode="bilinear",
                        align_corners=False, antialias=True)[0]  # (1, rows, cols)
    fill[:, top:top + rows, left:left + cols] = ref.to(image.dtype)
    return fill


def _cell_edges(n_pixels: int, n_cells: int) -> list[int]:
    """Cell boundaries along one axis: ``n_cells`` cells as even as integer pixels allow."""
    return [round(i * n_pixels / n_cells) for i in range(n_cells + 1)]


def _incidence(windows: list[tuple[int, int]], side: int, shape: tuple[int, int]) -> torch.Tensor:
    """(P, kh·kw): window p's even share of each sub-cell it covers (side × side sub-cells, each 1/side²)."""
    kh, kw = shape
    m = torch.zeros(len(windows), kh, kw)
    for p, (a, b) in enumerate(windows):
        m[p, a:a + side, b:b + side] = 1.0 / (side * side)
    return m.reshape(len(windows), kh * kw)


def _share_out(r0: torch.Tensor, base: torch.Tensor, r_occ: torch.Tensor, incidence: torch.Tensor, *,
               grid: tuple[int, int], k: int) -> torch.Tensor:
    """One sign's part: ``r0`` (C, Ni) ≥ 0 the value to share; ``base`` (C, Ni) ≥ 0 and ``r_occ`` (P, C, Ni) ≥ 0
    the same game's values unoccluded and with window ``p`` replaced → (C, kh, kw): each token's value shared among
    the windows by how much replacing them lowers it, each window's share spread evenly over its sub-cells; a token
    no replacement lowers keeps its value on its own cell."""
    h, w = grid
    drop = (base[None] - r_occ).clamp_min(0)  # (P, C, Ni)
    total = drop.sum(0)  # (C, Ni)
    share = torch.where(total > 0, drop / total.clamp_min(1e-30), torch.zeros_like(drop))  # (P, C, Ni)
    per_window = torch.einsum("pct,ct->cp", share, r0)  # (C, P)
    moved = per_window @ incidence.to(r0)  # (C, kh·kw)
    kept = torch.where(total > 0, torch.zeros_like(r0), r0)  # (C, Ni) no replacement lowered it: stays put
    return moved.reshape(-1, k * h, k * w) + _spread(kept, grid, k)


def _spread(r: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    """(C, Ni) token values → (C, kh, kw), each token's value spread evenly over its cell's sub-cells."""
    h, w = grid
    return r.reshape(-1, h, w).repeat_interleave(k, 1).repeat_interleave(k, 2) / (k * k)


@torch.no_grad()
def carry_image_relevance(model: ClinmmModel, inputs: ModelInputs, relevance: torch.Tensor, *,
                          grid: tuple[int, ...], boxes: torch.Tensor | None, reference: torch.Tensor,
                          subcells: int = 1, window: int | None = None, permutations: int = 4,
                          chunk: int = 64) -> torch.Tensor | None:
    """The image tokens' relevance → the same carried back to the image regions it was read from.

    The replaced regions are windows the size of one token cell (or ``window`` sub-cells); with ``subcells`` = k > 1
    they move by 1/k of a cell ((k·h − m + 1) × (k·w − m + 1) windows of m sub-cells instead of h × w), and the map
    has k × the token grid's resolution.

    Args:
        model: the classifier (eval mode); its fusion must return token relevance (cross_attention).
        inputs: the batch the relevance was computed on (on the model's device).
        relevance: (B, C, Ni + Lt) the output's token relevance (``ClinmmOutput.relevance``).
        grid: the image token grid (h, w).
        boxes: (B, 4) the image content's (top, left, rows, cols) on the model grid, or None (the whole image).
        reference: (1, S, S) the healthy reference (:func:`fit_healthy_reference`).
        subcells: k, the windows' step is 1/k of a token cell.
        window: m, the side of a replaced window in sub-cells (m / k token cells; default k, one cell). A window a
            little larger than a cell (m = 3 with k = 2) covers a lesion that straddles two cells.
        permutations: orderings each occluded image's token relevance is sampled from. The drops are measured
            against the unoccluded image's relevance from the same orderings (one more pass), so the sampling noise
            they share cancels; what is shared out is ``relevance`` as given.
        chunk: occluded images per encoder pass.

    Returns:
        (B, C, k·h, k·w) the image relevance on the sub-cell grid, each label's sum kept (a study without an image
        keeps its token values, spread over the sub-cells); None for a 3D grid (nothing is carried).
    """
    if len(grid) != 2 or inputs.image.dim() != 4:
        return None
    if subcells < 1:
        raise ValueError(f"carry_image_relevance: subcells must be >= 1, got {subcells}")
    h, w = grid
    k = subcells
    m = k if window is None else window
    if not 1 <= m <= min(k * h, k * w):
        raise ValueError(f"carry_image_relevance: window must be 1 … {min(k * h, k * w)} sub-cells, got {m}")
    ni = h * w
    _, _, height, width = inputs.image.shape
    ys, xs = _cell_edges(height, k * h), _cell_edges(width, k * w)
    out = torch.stack([_spread(relevance[i, :, :ni].float(), grid, k) for i in range(relevance.shape[0])])
    for i in range(relevance.shape[0]):
        if not bool(inputs.image_present[i]):
            continue
        box = boxes[i].tolist() if boxes is not None else [0, 0, height, width]
        top, left, rows, cols = box
        image = inputs.image[i]  # (1, H, W)
        fill = reference_fill(image, reference, box)
        # only windows that hold image content: replacing padding changes nothing
        windows = [(a, b) for a in range(k * h - m + 1) for b in range(k * w - m + 1)
                   if ys[a] < top + rows and ys[a + m] > top and xs[b] < left + cols and xs[b + m] > left]
        one = ModelInputs(**{key: v[i:i + 1] for key, v in inputs.__dict__.items()})
        txt, txt_mask, _ = model.forward_text(one)  # (1, Lt, D), (1, Lt)
        parts = []
        passes: list[tuple[int, int] | None] = [None, *windows]  # None: the image as it is (the drops' baseline)
        for start in range(0, len(passes), chunk):
            block = passes[start:start + chunk]
            occluded = image[None].repeat(len(block), 1, 1, 1)  # (n, 1, H, W)
            for j, spot in enumerate(block):
                if spot is not None:
                    a, b = spot
                    occluded[j, :, ys[a]:ys[a + m], xs[b]:xs[b + m]] = fill[:, ys[a]:ys[a + m], xs[b]:xs[b + m]]
            n = len(block)
            present = one.image_present.expand(n)
            img, img_mask, _ = model.forward_image(occluded, present)  # (n, Ni, D)
            rel = model.token_relevance(img, img_mask, txt.expand(n, -1, -1), txt_mask.expand(n, -1),
                                        image_present=present, text_present=one.text_present.expand(n),
                                        image_only=True, permutations=permutations)  # (n, C, Ni)
            parts.append(rel.float())
        r_all = torch.cat(parts)  # (1 + P, C, Ni)
        base, r_occ = r_all[0], r_all[1:]  # (C, Ni) the same game unoccluded, (P, C, Ni)
        shown = relevance[i, :, :ni].float()  # (C, Ni)
        incidence = _incidence(windows, m, (k * h, k * w))  # (P, kh·kw)
        out[i] = (_share_out(shown.clamp_min(0), base.clamp_min(0), r_occ.clamp_min(0), incidence, grid=grid, k=k)
                  - _share_out((-shown).clamp_min(0), (-base).clamp_min(0), (-r_occ).clamp_min(0), incidence,
                               grid=grid, k=k))
    return out
