"""Notes → overlapping token windows with character offsets into the ORIGINAL note text.

A note longer than the encoder's limit is never silently truncated: it is split into ``K`` overlapping windows of at
most ``max_length`` tokens (each ``[CLS] … [SEP]``), consecutive windows sharing ``stride`` content tokens, using the
fast tokenizer's ``return_overflowing_tokens=True, stride=…, return_offsets_mapping=True``. Only notes longer than
``max_chunks`` windows lose their tail, with a warning.

Every real token of the note appears in one or more windows; ``keep`` marks exactly one copy of each — the copy that
is most central in its window (most context on both sides); ties go to the earlier window. Special tokens are not kept,
except the first window's ``[CLS]``. Fusion attends over kept tokens only, so a token is never counted twice, and
``offsets`` map every kept token back to a character span of the original text.

Example::

    tok = NoteTokenizer(tokenizer=AutoTokenizer.from_pretrained(path), max_length=128, stride=32, max_chunks=8)
    enc = tok.encode("Indication: cough. Findings: ...")   # EncodedNote, tensors (K, L)
    batch = collate_notes([enc, tok.encode(None)])          # dict of (B, K, L) tensors, padded to the batch max
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from clinmm.config import TextEncoderConfig

__all__ = ["EncodedNote", "NoteTokenizer", "collate_notes"]

logger = logging.getLogger(__name__)


@dataclass
class EncodedNote:
    """One note as ``K`` token windows of (padded) length ``L``.

    Attributes:
        input_ids: (K, L) int64 token ids, padded with the tokenizer's pad id.
        attention_mask: (K, L) int64, 1 for real tokens (including special tokens) of each window.
        offsets: (K, L, 2) int64 ``[start, end)`` character span of each token in the ORIGINAL text
            (``(0, 0)`` for special and padding tokens).
        keep: (K, L) bool, True for the single copy of each token that fusion sees.
        truncated: True when the note had more than ``max_chunks`` windows and the tail was dropped.
        n_chars: length of the original text (0 for an empty note).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    offsets: torch.Tensor
    keep: torch.Tensor
    truncated: bool = False
    n_chars: int = 0

    @property
    def num_chunks(self) -> int:
        """``K``, the number of windows (0 for an empty note)."""
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        """Real tokens of the note counted once (kept tokens)."""
        return int(self.keep.sum())

    def kept_spans(self) -> list[tuple[int, int]]:
        """Character spans of the kept tokens in reading order (the first [CLS] gives ``(0, 0)``)."""
        spans = self.offsets[self.keep]  # (N, 2)
        return [(int(s), int(e)) for s, e in spans.tolist()]


def _empty(n_chars: int = 0) -> EncodedNote:
    return EncodedNote(
        input_ids=torch.zeros((0, 0), dtype=torch.long),
        attention_mask=torch.zeros((0, 0), dtype=torch.long),
        offsets=torch.zeros((0, 0, 2), dtype=torch.long),
        keep=torch.zeros((0, 0), dtype=torch.bool),
        truncated=False,
        n_chars=n_chars,
    )


class NoteTokenizer:
    """Split a note into overlapping token windows with offsets into the original text.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (``PreTrainedTokenizerFast``; offset mapping needs it).
        max_length: tokens per window, special tokens included (≤ the encoder's position limit).
        stride: content tokens shared by consecutive windows (0 ≤ stride < content tokens per window).
        max_chunks: windows kept per note; more are dropped with a warning (``EncodedNote.truncated``).

    Raises:
        ValueError: the tokenizer is not a fast tokenizer, or ``max_length`` / ``stride`` / ``max_chunks`` are
            inconsistent (the message gives both values).
    """

    def __init__(self, *, tokenizer: Any, max_length: int, stride: int, max_chunks: int) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"NoteTokenizer needs a fast tokenizer (offset mapping); got {type(tokenizer).__name__}. "
                "Make sure the model directory has a tokenizer.json or a vocab the fast tokenizer can convert."
            )
        self.n_special = tokenizer.num_special_tokens_to_add(pair=False)
        content = max_length - self.n_special
        if content < 2:
            raise ValueError(f"max_length ({max_length}) leaves {content} content tokens per window; need ≥ 2")
        if not 0 <= stride < content:
            raise ValueError(
                f"stride ({stride}) must be ≥ 0 and smaller than the content tokens per window ({content} = "
                f"max_length {max_length} − {self.n_special} special tokens)"
            )
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be ≥ 1, got {max_chunks}")
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 10**9 and max_length > model_max:
            raise ValueError(f"max_length ({max_length}) exceeds the tokenizer's model_max_length ({model_max})")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stride = stride
        self.max_chunks = max_chunks
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    @classmethod
    def from_config(cls, config: TextEncoderConfig, *, tokenizer: Any) -> NoteTokenizer:
        """Build from :class:`~clinmm.config.TextEncoderConfig` (``max_length``, ``stride``, ``max_chunks``)."""
        return cls(tokenizer=tokenizer, max_length=config.max_length, stride=config.stride,
                   max_chunks=config.max_chunks)

    @property
    def content_length(self) -> int:
        """Content (non-special) tokens per full window."""
        return self.max_length - self.n_special

    def encode(self, text: str | None) -> EncodedNote:
        """Tokenize one note.

        Args:
            text: the note as stored (offsets refer to this exact string); ``None``, ``""`` or blank → ``K = 0``.

        Returns:
            :class:`EncodedNote` with tensors (K, L), L = the longest window of this note (≤ ``max_length``).
        """
        if text is None or not str(text).strip():
            return _empty(0 if text is None else len(str(text)))
        text = str(text)
        enc = self.tokenizer(
            text,
            max_length=self.max_length,
            truncation=True,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            padding=False,
        )
        ids_list: list[list[int]] = enc["input_ids"]
        if not ids_list or all(sum(1 - s for s in m) == 0 for m in enc["special_tokens_mask"]):
            return _empty(len(text))  # only characters the tokenizer drops (e.g. control characters)
        truncated = len(ids_list) > self.max_chunks
        if truncated:
            warnings.warn(
                f"note of {len(text)} characters needs {len(ids_list)} windows of {self.max_length} tokens; "
                f"keeping the first {self.max_chunks} (max_chunks) and dropping the rest",
                stacklevel=2,
            )
        n_win = min(len(ids_list), self.max_chunks)
        L = max(len(ids_list[k]) for k in range(n_win))
        input_ids = np.full((n_win, L), self.pad_id, dtype=np.int64)
        attention = np.zeros((n_win, L), dtype=np.int64)
        offsets = np.zeros((n_win, L, 2), dtype=np.int64)
        keep = np.zeros((n_win, L), dtype=bool)

        # Global index of every content token: window k's content starts at k * (content_length - stride)
        # (the fast tokenizer repeats exactly `stride` tokens of the previous window). Offsets confirm it below.
        step = self.content_length - self.stride
        best_dist: dict[int, float] = {}
        best_pos: dict[int, tuple[int, int]] = {}
        first_offset: dict[int, tuple[int, int]] = {}
        for k in range(n_win):
            ids = ids_list[k]
            n = len(ids)
            input_ids[k, :n] = ids
            attention[k, :n] = 1
            offsets[k, :n] = np.asarray(enc["offset_mapping"][k], dtype=np.int64).reshape(n, 2)
            special = np.asarray(enc["special_tokens_mask"][k], dtype=bool)
            content_pos = np.flatnonzero(~special)
            n_content = len(content_pos)
            centre = (n_content - 1) / 2.0
            for j, pos in enumerate(content_pos):
                g = k * step + j
                span = (int(offsets[k, pos, 0]), int(offsets[k, pos, 1]))
                if g in first_offset and first_offset[g] != span:  # pragma: no cover - tokenizer contract
                    raise RuntimeError(
                        f"tokenizer {type(self.tokenizer).__name__} does not repeat exactly `stride` tokens between "
                        "overflowing windows; cannot de-duplicate overlaps"
                    )
                first_offset.setdefault(g, span)
                dist = abs(j - centre)
                if g not in best_dist or dist < best_dist[g]:
                    best_dist[g] = dist
                    best_pos[g] = (k, int(pos))
            offsets[k, :n][special] = 0
        for k, pos in best_pos.values():
            keep[k, pos] = True
        cls_pos = np.flatnonzero(np.asarray(enc["special_tokens_mask"][0], dtype=bool))
        if len(cls_pos) and cls_pos[0] == 0:
            keep[0, 0] = True  # the first window's [CLS] stands for the note as a whole
        return EncodedNote(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention),
            offsets=torch.from_numpy(offsets),
            keep=torch.from_numpy(keep),
            truncated=truncated,
            n_chars=len(text),
        )

    def __call__(self, text: str | None) -> EncodedNote:
        return self.encode(text)

    def encode_batch(self, texts: Sequence[str | None]) -> dict[str, torch.Tensor]:
        """Encode and collate several notes (see :func:`collate_notes`)."""
        return collate_notes([self.encode(t) for t in texts], pad_id=self.pad_id)


def collate_notes(notes: Sequence[EncodedNote], *, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of encoded notes to the batch's largest ``K`` and ``L`` (dynamic padding).

    Padding chunks/positions have ``attention_mask = 0`` and ``keep = False``; the encoder skips all-padding chunks,
    so a short note costs nothing extra beside a long one. ``K`` and ``L`` are at least 1, so shapes are never empty
    even when no note in the batch has text (then every mask is False).

    Args:
        notes: encoded notes (K may be 0).
        pad_id: token id used for padding (the tokenizer's pad id; 0 for BERT vocabularies).

    Returns:
        ``input_ids`` (B, K, L) int64, ``attention_mask`` (B, K, L) int64, ``keep`` (B, K, L) bool,
        ``offsets`` (B, K, L, 2) int64, ``num_chunks`` (B,) int64, ``truncated`` (B,) bool.
    """
    B = len(notes)
    K = max([n.num_chunks for n in notes] + [1])
    L = max([int(n.input_ids.shape[1]) for n in notes if n.num_chunks] + [1])
    input_ids = torch.full((B, K, L), pad_id, dtype=torch.long)
    attention = torch.zeros((B, K, L), dtype=torch.long)
    keep = torch.zeros((B, K, L), dtype=torch.bool)
    offsets = torch.zeros((B, K, L, 2), dtype=torch.long)
    for b, n in enumerate(notes):
        k, l_ = n.input_ids.shape
        if k == 0:
            continue
        input_ids[b, :k, :l_] = n.input_ids
        attention[b, :k, :l_] = n.attention_mask
        keep[b, :k, :l_] = n.keep
        offsets[b, :k, :l_] = n.offsets
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "keep": keep,
        "offsets": offsets,
        "num_chunks": torch.tensor([n.num_chunks for n in notes], dtype=torch.long),
        "truncated": torch.tensor([n.truncated for n in notes], dtype=torch.bool),
    }
