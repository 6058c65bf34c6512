"""Long notes: pool chunk features as configured, and stitch token scores back to character spans of the note.

:class:`~clinmm.text.tokenize.NoteTokenizer` splits a long note into overlapping windows and marks one copy of every
token (``keep``). This module works on what the encoder returns for those windows:

- :func:`pool_chunks` applies ``TextEncoderConfig.pooling``:

  * ``"tokens"`` (default): every kept token is its own unit (B, K*L, H); overlaps are already de-duplicated by
    ``keep``, so fusion attends over the whole note at token resolution, however long it is.
  * ``"mean"`` / ``"max"``: one vector per chunk — the mean / max of that chunk's kept token states — giving units
    (B, K, H); cheaper for fusion, coarser explanations (a chunk's score is spread over its tokens).

- :func:`stitch_token_scores` maps per-unit scores (attention weights, attributions) to the kept tokens' character
  spans in the ORIGINAL note text; :func:`word_scores` merges word pieces into words and :func:`char_scores` paints a
  per-character array (what a highlighter needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = ["PooledText", "TokenSpan", "pool_chunks", "stitch_token_scores", "word_scores", "char_scores",
           "kept_token_states"]

Pooling = Literal["tokens", "mean", "max"]


@dataclass
class PooledText:
    """Text units handed to fusion / a classifier head.

    Attributes:
        units: (B, U, H) unit features; U = K*L for ``tokens`` pooling, U = K for ``mean`` / ``max``.
        mask: (B, U) bool, True for units that carry text.
        mode: the pooling used.
    """

    units: torch.Tensor
    mask: torch.Tensor
    mode: str


@dataclass
class TokenSpan:
    """A kept token (or merged word) with its character span in the original note and its score."""

    start: int
    end: int
    score: float


def pool_chunks(tokens: torch.Tensor, mask: torch.Tensor, *, num_chunks: int, mode: Pooling = "tokens") -> PooledText:
    """Pool encoder output per ``TextEncoderConfig.pooling``.

    Args:
        tokens: (B, K*L, H) from :class:`~clinmm.models.text.TextFeatures`.
        mask: (B, K*L) bool kept-token mask.
        num_chunks: K.
        mode: ``tokens``, ``mean`` or ``max``.

    Returns:
        :class:`PooledText` with units (B, U, H) and mask (B, U).
    """
    if mode == "tokens":
        return PooledText(units=tokens, mask=mask, mode=mode)
    B, KL, H = tokens.shape
    if num_chunks < 1 or KL % num_chunks:
        raise ValueError(f"tokens of length {KL} cannot be split into num_chunks={num_chunks} chunks")
    L = KL // num_chunks
    t = tokens.reshape(B, num_chunks, L, H)  # (B, K, L, H)
    m = mask.reshape(B, num_chunks, L)  # (B, K, L)
    chunk_mask = m.any(dim=-1)  # (B, K)
    if mode == "mean":
        w = m.to(t.dtype).unsqueeze(-1)  # (B, K, L, 1)
        units = (t * w).sum(2) / w.sum(2).clamp_min(1.0)  # (B, K, H)
    elif mode == "max":
        neg = torch.finfo(t.dtype).min
        units = t.masked_fill(~m.unsqueeze(-1), neg).amax(dim=2)  # (B, K, H)
        units = units.masked_fill(~chunk_mask.unsqueeze(-1), 0.0)
    else:
        raise ValueError(f"pooling must be one of 'tokens', 'mean', 'max'; got {mode!r}")
    return PooledText(units=units, mask=chunk_mask, mode=mode)


def _as_token_scores(scores: torch.Tensor | np.ndarray, keep: torch.Tensor) -> np.ndarray:
    """Per-unit scores of ONE note → (K, L) per-token scores (chunk scores spread over the chunk's tokens)."""
    s = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    K, L = keep.shape
    if s.size == K * L:
        return s.reshape(K, L)
    if s.size == K:
        return np.repeat(s.reshape(K, 1), L, axis=1)
    raise ValueError(f"scores of size {s.size} match neither tokens (K*L = {K * L}) nor chunks (K = {K})")


def stitch_token_scores(
    scores: torch.Tensor | np.ndarray, offsets: torch.Tensor, keep: torch.Tensor, *, include_special: bool = False
) -> list[TokenSpan]:
    """Scores of one note's units → kept tokens' character spans in the original text, in reading order.

    Args:
        scores: (K*L,) or (K, L) per-token scores, or (K,) per-chunk scores (``mean``/``max`` pooling).
        offsets: (K, L, 2) character spans from :class:`~clinmm.text.tokenize.EncodedNote` (or a padded batch row).
        keep: (K, L) bool kept-token mask (each real token once).
        include_special: also return the first [CLS] (span (0, 0)).

    Returns:
        one :class:`TokenSpan` per kept token, sorted by start.
    """
    keep = keep.bool().cpu()
    per_tok = _as_token_scores(scores, keep)
    offs = offsets.cpu().numpy()
    out = []
    for k, l_ in keep.nonzero().tolist():
        s, e = int(offs[k, l_, 0]), int(offs[k, l_, 1])
        if e <= s and not include_special:
            continue
        out.append(TokenSpan(start=s, end=e, score=float(per_tok[k, l_])))
    out.sort(key=lambda t: (t.start, t.end))
    return out


def word_scores(spans: list[TokenSpan], text: str, *, reduce: Literal["sum", "max"] = "sum") -> list[TokenSpan]:
    """Merge word pieces that touch (no character between them) into words; scores summed (or max)."""
    words: list[TokenSpan] = []
    for sp in spans:
        if words and sp.start == words[-1].end and sp.start > 0 and not text[sp.start - 1].isspace() and (
            text[sp.start].isalnum() and text[sp.start - 1].isalnum()
        ):
            w = words[-1]
            w.end = sp.end
            w.score = w.score + sp.score if reduce == "sum" else max(w.score, sp.score)
        else:
            words.append(TokenSpan(sp.start, sp.end, sp.score))
    return words


def char_scores(spans: list[TokenSpan], n_chars: int) -> np.ndarray:
    """Per-character score array (n_chars,) for highlighting; characters outside any token get 0."""
    out = np.zeros(n_chars, dtype=np.float32)
    for sp in spans:
        out[sp.start : sp.end] = sp.score
    return out


def kept_token_states(tokens: torch.Tensor, mask: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, list]:
    """One note's token states stitched across chunks: (N, H) states of the kept tokens in reading order + spans.

    Args:
        tokens: (K*L, H) one row of ``TextFeatures.tokens``.
        mask: (K*L,) one row of ``TextFeatures.mask``.
        offsets: (K, L, 2) the note's offsets.
    """
    flat_off = offsets.reshape(-1, 2).to(tokens.device)  # (K*L, 2)
    idx = mask.nonzero(as_tuple=True)[0]  # (N,)
    starts = flat_off[idx, 0]
    order = torch.argsort(starts * (flat_off.shape[0] + 1) + torch.arange(len(idx), device=tokens.device))
    idx = idx[order]
    return tokens[idx], [tuple(x) for x in flat_off[idx].tolist()]
