"""Chunk pooling per config, stitching scores to character spans, length bucketing."""

from __future__ import annotations

import pytest
import torch

from clinmm.text.bucketing import LengthBucketBatchSampler, padded_cost
from clinmm.text.chunking import char_scores, kept_token_states, pool_chunks, stitch_token_scores, word_scores


def _toy():
    # one note, K=2 windows of L=4: window 0 = [CLS] a b [SEP]; window 1 = [CLS] b c [SEP]; "b" kept in window 0
    text = "ab cd"
    offsets = torch.tensor([[[0, 0], [0, 1], [1, 2], [0, 0]], [[0, 0], [1, 2], [3, 5], [0, 0]]])
    keep = torch.tensor([[True, True, True, False], [False, False, True, False]])
    return text, offsets, keep


def test_pool_modes_shapes_and_values():
    _, _, keep = _toy()
    tokens = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3)  # (B, K*L, H)
    mask = torch.stack([keep.flatten(), torch.zeros(8, dtype=torch.bool)])  # 2nd note empty
    t = pool_chunks(tokens, mask, num_chunks=2, mode="tokens")
    assert t.units is tokens and torch.equal(t.mask, mask)
    m = pool_chunks(tokens, mask, num_chunks=2, mode="mean")
    assert m.units.shape == (2, 2, 3) and m.mask.tolist() == [[True, True], [False, False]]
    torch.testing.assert_close(m.units[0, 0], tokens[0, :3].mean(0))
    torch.testing.assert_close(m.units[0, 1], tokens[0, 6])
    x = pool_chunks(tokens, mask, num_chunks=2, mode="max")
    torch.testing.assert_close(x.units[0, 0], tokens[0, 2])
    assert torch.isfinite(x.units).all() and x.units[1].abs().sum() == 0
    with pytest.raises(ValueError, match="pooling"):
        pool_chunks(tokens, mask, num_chunks=2, mode="sum")  # type: ignore[arg-type]


def test_stitch_scores_to_character_spans():
    text, offsets, keep = _toy()
    scores = torch.tensor([[0.1, 0.2, 0.3, 9.0], [9.0, 9.0, 0.4, 9.0]])  # non-kept copies carry junk
    spans = stitch_token_scores(scores.flatten(), offsets, keep)
    assert [(s.start, s.end) for s in spans] == [(0, 1), (1, 2), (3, 5)]
    assert [round(s.score, 3) for s in spans] == [0.2, 0.3, 0.4]  # [CLS] dropped, each token once
    words = word_scores(spans, text)
    assert [(w.start, w.end, round(w.score, 3)) for w in words] == [(0, 2, 0.5), (3, 5, 0.4)]
    cs = char_scores(spans, len(text))
    assert cs.tolist() == pytest.approx([0.2, 0.3, 0.0, 0.4, 0.4])
    chunk = stitch_token_scores(torch.tensor([1.0, 2.0]), offsets, keep)  # mean/max pooling: per-chunk scores
    assert [s.score for s in chunk] == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="match"):
        stitch_token_scores(torch.ones(3), offsets, keep)


def test_kept_token_states_reading_order():
    _, offsets, keep = _toy()
    tokens = torch.arange(8, dtype=torch.float32).unsqueeze(-1)  # (K*L, 1)
    states, spans = kept_token_states(tokens, keep.flatten(), offsets)
    assert spans == [(0, 0), (0, 1), (1, 2), (3, 5)] and states.flatten().tolist() == [0, 1, 2, 6]


def test_length_bucketing_reduces_padding_and_covers_everything():
    import random

    rng = random.Random(0)
    lengths = [rng.choice([5, 8, 12, 30, 60, 128, 400]) for _ in range(1000)]
    s = LengthBucketBatchSampler(lengths, batch_size=16, pool_batches=20, seed=1)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == len(s)
    naive = [list(range(i, min(i + 16, 1000))) for i in range(0, 1000, 16)]
    assert padded_cost(lengths, batches) < 0.6 * padded_cost(lengths, naive)
    s.set_epoch(1)
    assert list(s) != batches  # new order each epoch
    fixed = LengthBucketBatchSampler(lengths, batch_size=16, shuffle=False, pool_batches=0)
    flat = [lengths[i] for b in fixed for i in b]
    assert flat == sorted(flat)
    dl = LengthBucketBatchSampler(lengths, batch_size=16, drop_last=True)
    assert all(len(b) == 16 for b in dl) and len(list(dl)) == len(dl)
