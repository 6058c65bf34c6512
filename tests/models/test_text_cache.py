"""The frozen-text-encoder cache returns what the encoder returns, whatever the batch padding; it prefills, round-trips
through its safetensors file, and is shared by models until their text-encoder weights change."""

from __future__ import annotations

import pytest
import torch

from clinmm.data.dataset import collate
from clinmm.models.classifier import ClinmmModel
from clinmm.models.text import TextEncoder
from clinmm.models.text_cache import FrozenTextCache
from clinmm.text.tokenize import collate_notes

from clinmm_tiny import LABELS, make_samples, tiny_config


@pytest.fixture(scope="module")
def encoder(tiny_text_dir) -> TextEncoder:
    enc = TextEncoder.from_config(tiny_config(tiny_text_dir).text)
    enc.freeze_layers(len(enc._layers()))
    enc.eval()
    return enc


def _assert_same(cache: FrozenTextCache, encoder: TextEncoder, batch: dict) -> None:
    with torch.no_grad():
        ref = encoder(batch["input_ids"], batch["attention_mask"], batch["keep"])
    tokens, mask = cache(encoder, batch["input_ids"], batch["attention_mask"], batch["keep"])
    assert torch.equal(mask, ref.mask)
    assert mask.any()
    torch.testing.assert_close(tokens[mask], ref.tokens[mask], atol=1e-5, rtol=1e-5)


def test_cache_matches_encoder_across_paddings_and_companions(encoder: TextEncoder) -> None:
    tok = encoder.note_tokenizer()
    short = tok.encode("No fever. Mild dyspnea on exertion.")
    long = tok.encode("History: " + "chronic cough and wheeze, " * 12 + "now febrile.")
    assert long.num_chunks > 1 and short.num_chunks == 1
    cache = FrozenTextCache()
    for notes in ([short, long], [short], [long, short, short]):
        _assert_same(cache, encoder, collate_notes(notes))
    assert len(cache) == 2 and cache.hits >= 3 and cache.nbytes > 0


def test_fill_then_file_round_trip_serve_every_batch(encoder: TextEncoder, tmp_path) -> None:
    samples = make_samples(encoder.note_tokenizer(), 12, seed=7)
    notes = [s.note for s in samples]
    cache = FrozenTextCache(max_bytes=None)
    n = cache.fill(encoder, notes, batch_size=5)
    assert n == len(cache) == len({tuple(s.note.input_ids.flatten().tolist()) for s in samples if s.note.num_chunks})
    assert cache.fill(encoder, notes) == 0  # nothing left to encode
    path = tmp_path / "c.safetensors"
    cache.save(path)
    again = FrozenTextCache()
    assert again.load(path) == len(cache)
    for group in (samples[:4], samples[3:12], samples[6:7]):
        batch = collate(group, image_size=32).inputs
        before = again.misses
        _assert_same(again, encoder, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                                      "keep": batch.keep})
        assert again.misses == before  # every note came from the file
    assert FrozenTextCache().load(tmp_path / "absent.safetensors") == 0


def test_budget_caps_memory_but_not_results(encoder: TextEncoder) -> None:
    samples = make_samples(encoder.note_tokenizer(), 6, seed=3, missing=False)
    cache = FrozenTextCache(max_bytes=1)
    batch = collate_notes([s.note for s in samples])
    _assert_same(cache, encoder, batch)
    assert len(cache) == 0 and cache.nbytes == 0


def test_models_share_a_cache_until_text_weights_change(tiny_text_dir) -> None:
    cfg = tiny_config(tiny_text_dir)
    encoder = TextEncoder.from_config(cfg.text)  # its own: this test changes its weights
    encoder.freeze_layers(len(encoder._layers()))
    shared = FrozenTextCache()
    a = ClinmmModel(config=cfg, labels=LABELS, text_encoder=encoder, text_cache=shared)
    b = ClinmmModel(config=cfg, labels=LABELS, text_encoder=encoder, text_cache=shared)
    assert a.text_cache is b.text_cache
    shared.fill(encoder, [s.note for s in make_samples(encoder.note_tokenizer(), 4, seed=1, missing=False)])
    assert len(shared)
    a.load_state_dict(b.state_dict())  # same frozen text weights: the features stay valid
    assert len(shared)
    state = b.state_dict()
    name = next(k for k in state if k.startswith("text_encoder.") and state[k].is_floating_point())
    state[name] = state[name] + 1.0
    a.load_state_dict(state)
    assert len(shared) == 0
