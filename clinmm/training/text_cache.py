"""A frozen text encoder's outputs computed once per note and looked up during training (CPU budgets).

When every layer of the text encoder is frozen (``text.freeze_layers`` = number of layers, no LoRA), its token
features do not change during training; :class:`CachedTextEncoder` runs the real encoder once per distinct note (eval
mode) and afterwards returns the stored features for any batch, padded like the live encoder's output. The cache key
is the note's real token ids, so a batch may pad K and L as it likes. Used by ``clinmm compare`` and
``clinmm pretrain-contrastive`` on CPU; outputs equal the live encoder's in eval mode within float tolerance (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from clinmm.data.dataset import Sample
from clinmm.models.text import TextFeatures
from clinmm.text.tokenize import collate_notes

__all__ = ["CachedTextEncoder", "fully_frozen"]

logger = logging.getLogger(__name__)


def fully_frozen(encoder: nn.Module) -> bool:
    """True when no parameter of ``encoder`` requires a gradient."""
    return not any(p.requires_grad for p in encoder.parameters())


def _key(ids: torch.Tensor, mask: torch.Tensor) -> bytes:
    return ids[mask.bool()].to(torch.int64).numpy().tobytes()


class CachedTextEncoder(nn.Module):
    """Stand-in for a frozen :class:`clinmm.models.text.TextEncoder` that serves precomputed features.

    Args:
        encoder: the frozen text encoder (kept for its tokenizer, config and hidden size; not part of ``state_dict``).
        samples: every sample whose note will be seen (train, val, test).
        batch_size: notes per encoder call while filling the cache.
        dtype: storage dtype of the cached features (float32 keeps outputs exact).
        path: optional safetensors file: notes found there are not recomputed, and the filled cache is written back
            (shares one encoding pass between processes, e.g. ``compare`` and ``pretrain-contrastive``). Only valid
            for the same encoder weights and tokenizer settings; the caller chooses the file name accordingly.
    """

    def __init__(self, *, encoder: nn.Module, samples: Sequence[Sample], batch_size: int = 32,
                 dtype: torch.dtype = torch.float32, path: str | None = None) -> None:
        super().__init__()
        if not fully_frozen(encoder):
            raise ValueError("CachedTextEncoder needs a fully frozen text encoder (text.freeze_layers = all layers)")
        object.__setattr__(self, "_encoder", encoder)  # not a registered submodule: no weights in state_dict
        # A frozen scalar so that ``next(module.parameters())`` (device lookups) works; it never trains.
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.hidden_size = encoder.hidden_size
        self.tokenizer = encoder.tokenizer
        self.config = encoder.config
        self.cache: dict[bytes, torch.Tensor] = {}
        if path:
            self._load(path)
        before = len(self.cache)
        self._fill(samples, batch_size, dtype)
        if path and len(self.cache) > before:
            self._save(path)

    def _load(self, path: str) -> None:
        import os

        from safetensors.torch import load_file

        if os.path.isfile(path):
            self.cache.update({bytes.fromhex(k): v for k, v in load_file(path).items()})
            logger.info("loaded %d cached note features from %s", len(self.cache), path)

    def _save(self, path: str) -> None:
        import os

        from safetensors.torch import save_file

        tmp = f"{path}.tmp{os.getpid()}"
        save_file({k.hex(): v.contiguous() for k, v in self.cache.items()}, tmp)
        os.replace(tmp, path)

    def note_tokenizer(self):
        return self._encoder.note_tokenizer()

    @torch.inference_mode()
    def _fill(self, samples: Sequence[Sample], batch_size: int, dtype: torch.dtype) -> None:
        pad_id = int(getattr(self.tokenizer, "pad_token_id", 0) or 0)
        todo, seen = [], set()
        for s in samples:
            if s.note.num_chunks == 0:
                continue
            k = _key(s.note.input_ids, s.note.attention_mask)
            if k not in seen and k not in self.cache:
                seen.add(k)
                todo.append(s.note)
        todo.sort(key=lambda n: (n.num_chunks, int(n.attention_mask.sum())))  # similar lengths together
        was_training = self._encoder.training
        self._encoder.eval()
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            batch = collate_notes(chunk, pad_id=pad_id)
            feats = self._encoder(batch["input_ids"], batch["attention_mask"], batch["keep"])
            b, k, l = batch["input_ids"].shape
            tokens = feats.tokens.reshape(b, k, l, -1)  # (B, K, L, H)
            for i, note in enumerate(chunk):
                ki, li = note.input_ids.shape
                self.cache[_key(note.input_ids, note.attention_mask)] = tokens[i, :ki, :li].to(dtype).clone()
        self._encoder.train(was_training)
        logger.info("cached frozen text features of %d distinct notes", len(self.cache))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor, *,
                output_attentions: bool = False) -> TextFeatures:
        """Same contract as ``TextEncoder.forward``: tokens (B, K*L, H) and mask (B, K*L)."""
        if output_attentions:
            raise ValueError("CachedTextEncoder cannot return attentions; use the live encoder for explanations")
        b, k, l = input_ids.shape
        out = torch.zeros(b, k, l, self.hidden_size)  # (B, K, L, H)
        ids, am = input_ids.cpu(), attention_mask.cpu()
        for i in range(b):
            if not bool(am[i].any()):
                continue
            feats = self.cache.get(_key(ids[i], am[i]))
            if feats is None:
                raise KeyError("CachedTextEncoder: a note that was not cached; pass every sample at construction")
            ki, li = feats.shape[:2]
            out[i, :ki, :li] = feats.float()
        device = self.anchor.device
        mask = (attention_mask.bool() & keep.bool()).reshape(b, k * l).to(device)  # (B, K*L)
        return TextFeatures(tokens=out.reshape(b, k * l, -1).to(device), mask=mask)
