"""Feature cache for a frozen text encoder: each note is encoded once, not once per epoch.

When every text-encoder parameter is frozen (``text.freeze_layers`` = number of layers, as in the CPU demo), its
output for a note never changes, so recomputing it every epoch is pure waste. The cache keys a note by its unpadded
chunk contents, stores the kept tokens' features, and re-lays them out for whatever padding the next batch uses, so
the result equals the encoder's own output at every kept position (padding invariance makes that exact).
Features are always computed with the encoder in eval mode (no dropout noise is frozen into the cache).

:class:`clinmm.models.classifier.ClinmmModel` consults its cache (``model.text_cache``) in ``forward_text``. Several
models that share one frozen encoder may share one cache (``clinmm compare``); :meth:`FrozenTextCache.fill` encodes a
list of notes up front, and :meth:`~FrozenTextCache.save` / :meth:`~FrozenTextCache.load` share the encoding pass
between processes (``clinmm compare`` and ``clinmm pretrain-contrastive``) through a safetensors file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from clinmm.text.tokenize import EncodedNote, collate_notes

__all__ = ["FrozenTextCache", "encoder_fingerprint"]


def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 (first 16 hex digits) of an encoder's parameters and buffers: names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]

logger = logging.getLogger(__name__)

_FORMAT = "clinmm-frozen-text-cache/1"


class FrozenTextCache:
    """Per-note cache of kept-token features.

    Args:
        max_bytes: feature memory kept at most (None: no limit); later notes are computed every time (no eviction
            churn).
        enabled: whether the model uses the cache (checkpoints loaded for inference switch it off: a scoring run
            sees each note once, so caching would only cost memory).
    """

    def __init__(self, *, max_bytes: int | None = 512 * 1024**2, enabled: bool = True) -> None:
        self.max_bytes = max_bytes
        self.enabled = enabled
        self.nbytes = 0
        self._store: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._store.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def _key(ids: torch.Tensor, am: torch.Tensor, keep: torch.Tensor) -> tuple[bytes, torch.Tensor]:
        """Key of one note (K, L) and the (chunk, position) of its kept tokens in its own unpadded layout."""
        h = hashlib.blake2b(digest_size=16)
        lengths = am.sum(dim=1)  # (K,)
        for k in range(ids.shape[0]):
            n = int(lengths[k])
            if n == 0:
                continue
            h.update(n.to_bytes(4, "little"))
            h.update(ids[k, :n].cpu().numpy().tobytes())
            h.update(keep[k, :n].cpu().numpy().tobytes())
        kept = (keep.bool() & am.bool()).nonzero()  # (T, 2): chunk, position
        return h.digest(), kept

    def _put(self, key: bytes, kept: torch.Tensor, vec: torch.Tensor) -> None:
        size = vec.numel() * vec.element_size()
        if self.max_bytes is None or self.nbytes + size <= self.max_bytes:
            self._store[key] = (kept.cpu(), vec)
            self.nbytes += size

    def _encode(self, encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                keep: torch.Tensor, keys: Sequence[tuple[bytes, torch.Tensor]]) -> list[torch.Tensor]:
        """Run ``encoder`` (eval mode, no grad) on a batch; store and return each note's kept features (T, H)."""
        length = input_ids.shape[2]
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                feats = encoder(input_ids, attention_mask, keep)  # tokens (M, K*L, H)
        finally:
            encoder.train(was_training)
        out = []
        for j, (key, kept) in enumerate(keys):
            flat = kept[:, 0] * length + kept[:, 1]  # (T,)
            vec = feats.tokens[j, flat.to(feats.tokens.device)].detach()  # (T, H)
            self._put(key, kept, vec)
            out.append(vec)
        return out

    def fill(self, encoder: nn.Module, notes: Sequence[EncodedNote], *, batch_size: int = 32, pad_id: int = 0) -> int:
        """Encode every note not cached yet, ``batch_size`` at a time (similar lengths together); return how many.

        Args:
            encoder: the frozen text encoder whose features the cache holds.
            notes: encoded notes (empty notes are skipped).
            batch_size: notes per encoder call.
            pad_id: the tokenizer's pad id.
        """
        todo: dict[bytes, EncodedNote] = {}
        for note in notes:
            if note.num_chunks == 0:
                continue
            key, _ = self._key(note.input_ids, note.attention_mask, note.keep)
            if key not in self._store:
                todo.setdefault(key, note)
        order = sorted(todo.values(), key=lambda n: (n.num_chunks, int(n.attention_mask.sum())))
        device = next(encoder.parameters()).device
        for start in range(0, len(order), batch_size):
            batch = collate_notes(order[start : start + batch_size], pad_id=pad_id)
            ids, am, keep = (batch[k] for k in ("input_ids", "attention_mask", "keep"))
            keys = [self._key(ids[i], am[i], keep[i]) for i in range(ids.shape[0])]
            self._encode(encoder, ids.to(device), am.to(device), keep.to(device), keys)
        self.misses += len(order)
        logger.info("encoded %d notes for the frozen-text cache (%d cached)", len(order), len(self))
        return len(order)

    def save(self, path: str | Path, *, tag: str = "") -> None:
        """Write the cache to a safetensors file (atomically). Only valid for the same encoder and tokenizer: pass
        ``tag`` (e.g. :func:`encoder_fingerprint`) and :meth:`load` ignores the file for any other tag."""
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for key, (kept, vec) in self._store.items():
            tensors[f"{key.hex()}.kept"] = kept.contiguous()
            tensors[f"{key.hex()}.feats"] = vec.detach().cpu().contiguous()
        tmp = f"{path}.tmp{os.getpid()}"
        save_file(tensors, tmp, metadata={"format": _FORMAT, "tag": tag})
        os.replace(tmp, path)

    def load(self, path: str | Path, *, tag: str = "") -> int:
        """Add the notes stored in ``path`` (see :meth:`save`); return how many. A missing file adds none.

        A file written in another format or with another ``tag`` (another encoder's weights) is ignored with a
        warning.
        """
        from safetensors import safe_open

        if not os.path.isfile(path):
            return 0
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("format") != _FORMAT:
                logger.warning("%s is not a %s file; ignored (its notes will be encoded again)", path, _FORMAT)
                return 0
            if (f.metadata() or {}).get("tag", "") != tag:
                logger.warning("%s holds features of another text encoder (tag %r, expected %r); ignored", path,
                               (f.metadata() or {}).get("tag", ""), tag)
                return 0
            names = {name.rsplit(".", 1)[0] for name in f.keys()}
            for name in names:
                self._put(bytes.fromhex(name), f.get_tensor(f"{name}.kept"), f.get_tensor(f"{name}.feats"))
        logger.info("loaded %d cached note features from %s", len(names), path)
        return len(names)

    def __call__(self, encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, K*L, H) and mask (B, K*L), as ``encoder(input_ids, attention_mask, keep)`` would return."""
        b, k, length = input_ids.shape
        device = next(encoder.parameters()).device
        h = encoder.hidden_size
        keys = [self._key(input_ids[i], attention_mask[i], keep[i]) for i in range(b)]
        missing = [i for i, (key, kept) in enumerate(keys) if len(kept) and key not in self._store]  # empty: zeros
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            sel = torch.tensor(missing, device=input_ids.device)
            vecs = self._encode(encoder, input_ids[sel], attention_mask[sel], keep[sel], [keys[i] for i in missing])
            fresh = dict(zip(missing, vecs))
            self.misses += len(missing)
        self.hits += b - len(missing)
        tokens = torch.zeros(b, k * length, h, device=device)  # (B, K*L, H)
        for i, (key, kept) in enumerate(keys):
            if len(kept):
                vec = fresh[i] if i in fresh else self._store[key][1]
                flat = (kept[:, 0] * length + kept[:, 1]).to(device)  # (T,) positions in this batch's layout
                tokens[i, flat] = vec.to(device=device, dtype=tokens.dtype)
        mask = (attention_mask.bool() & keep.bool()).reshape(b, k * length).to(device)  # (B, K*L)
        return tokens, mask
