"""Length bucketing: batches of notes of similar length, so short notes don't pay for long ones.

With dynamic padding (:func:`clinmm.text.tokenize.collate_notes` pads to the batch's longest note) the cost of a batch
is set by its longest note. :class:`LengthBucketBatchSampler` sorts notes by length inside large random pools and cuts
batches from each sorted pool, then shuffles the batch order — the usual "bucket iterator" (torchtext's
``BucketIterator`` did this; neither torch nor transformers ship one for arbitrary datasets — ``transformers``'
``group_by_length`` lives inside its ``Trainer``).

Use it as ``DataLoader(dataset, batch_sampler=LengthBucketBatchSampler(lengths, batch_size=32), collate_fn=...)``,
with ``lengths[i]`` = the token count of note ``i`` (e.g. ``EncodedNote.num_chunks * L`` or ``num_tokens``) or any
proxy such as its character length.
"""

from __future__ import annotations

import math
import random
from typing import Iterator, Sequence

from torch.utils.data import Sampler

__all__ = ["LengthBucketBatchSampler", "padded_cost"]


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Yield lists of indices whose notes have similar lengths.

    Args:
        lengths: length of each item (tokens or characters); items of length 0 (no note) are fine.
        batch_size: items per batch.
        pool_batches: a pool of ``pool_batches * batch_size`` randomly chosen items is sorted by length and cut into
            batches; larger pools pad less, smaller pools keep more randomness. ``0`` sorts the whole data set.
        shuffle: shuffle items into pools and shuffle the batch order (training); ``False`` gives a deterministic
            order sorted by length (inference).
        drop_last: drop the last incomplete batch of each pool.
        seed: base seed; epoch ``e`` uses ``seed + e`` (call :meth:`set_epoch`).

    Raises:
        ValueError: ``batch_size < 1`` or ``pool_batches < 0``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        batch_size: int,
        pool_batches: int = 50,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if pool_batches < 0:
            raise ValueError(f"pool_batches must be ≥ 0, got {pool_batches}")
        self.lengths = [int(x) for x in lengths]
        self.batch_size = batch_size
        self.pool_batches = pool_batches
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling seed (``seed + epoch``) so each epoch gets new batches."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        order = list(range(n))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        pool = n if self.pool_batches == 0 else self.pool_batches * self.batch_size
        batches: list[list[int]] = []
        for start in range(0, n, max(pool, 1)):
            chunk = sorted(order[start : start + pool], key=lambda i: (self.lengths[i], i))
            for b in range(0, len(chunk), self.batch_size):
                batch = chunk[b : b + self.batch_size]
                if self.drop_last and len(batch) < self.batch_size:
                    continue
                batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        if not self.drop_last:
            n = len(self.lengths)
            pool = n if self.pool_batches == 0 else self.pool_batches * self.batch_size
            return sum(math.ceil(min(pool, n - s) / self.batch_size) for s in range(0, n, max(pool, 1)))
        return len(self._batches())


def padded_cost(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Total padded size (sum over batches of ``len(batch) * max length``) — what dynamic padding pays."""
    return sum(len(b) * max((lengths[i] for i in b), default=0) for b in batches)
