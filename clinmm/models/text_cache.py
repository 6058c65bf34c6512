"""Feature cache for a frozen text encoder: each note is encoded once, not once per epoch.

When every text-encoder parameter is frozen (``text.freeze_layers`` = number of layers, as in the CPU demo), its
output for a note never changes, so recomputing it every epoch is pure waste. The cache keys a note by its unpadded
chunk contents, stores the kept tokens' features, and re-lays them out for whatever padding the next batch uses, so
the result equals the encoder's own output at every kept position (padding invariance makes that exact).
Features are always computed with the encoder in eval mode (no dropout noise is frozen into the cache).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["FrozenTextCache"]


class FrozenTextCache:
    """Per-note cache of kept-token features.

    Args:
        max_bytes: feature memory kept at most; later notes are computed every time (no eviction churn).
        enabled: whether the model uses the cache (checkpoints loaded for inference switch it off: a scoring run
            sees each note once, so caching would only cost memory).
    """

    def __init__(self, *, max_bytes: int = 512 * 1024**2, enabled: bool = True) -> None:
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

    def __call__(self, encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, K*L, H) and mask (B, K*L), as ``encoder(input_ids, attention_mask, keep)`` would return."""
        b, k, length = input_ids.shape
        device = next(encoder.parameters()).device
        h = encoder.hidden_size
        keys = [self._key(input_ids[i], attention_mask[i], keep[i]) for i in range(b)]
        missing = [i for i, (key, _) in enumerate(keys) if key not in self._store]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            was_training = encoder.training
            encoder.eval()
            with torch.no_grad():
                sel = torch.tensor(missing)
                feats = encoder(input_ids[sel], attention_mask[sel], keep[sel])  # tokens (M, K*L, H)
            encoder.train(was_training)
            for j, i in enumerate(missing):
                kept = keys[i][1]
                flat = kept[:, 0] * length + kept[:, 1]  # (T,)
                vec = feats.tokens[j, flat.to(feats.tokens.device)].detach()  # (T, H)
                fresh[i] = vec
                size = vec.numel() * vec.element_size()
                if self.nbytes + size <= self.max_bytes:
                    self._store[keys[i][0]] = (kept.cpu(), vec)
                    self.nbytes += size
            self.misses += len(missing)
        self.hits += b - len(missing)
        tokens = torch.zeros(b, k * length, h, device=device)  # (B, K*L, H)
        for i, (key, kept) in enumerate(keys):
            vec = fresh[i] if i in fresh else self._store[key][1]
            if len(kept):
                flat = (kept[:, 0] * length + kept[:, 1]).to(device)  # (T,) positions in this batch's layout
                tokens[i, flat] = vec.to(device=device, dtype=tokens.dtype)
        mask = (attention_mask.bool() & keep.bool()).reshape(b, k * length).to(device)  # (B, K*L)
        return tokens, mask
