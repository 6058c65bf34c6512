"""The shared frozen-text feature cache (``clinmm.training.text_cache``) returns what the live encoder returns, for
any batch padding, and round-trips through its safetensors file."""

from __future__ import annotations

import pytest
import torch

from clinmm.data.dataset import collate
from clinmm.models.text import TextEncoder
from clinmm.training.text_cache import CachedTextEncoder

from clinmm_tiny import make_samples, tiny_config


def test_cached_equals_live_and_file_round_trip(tmp_path, tiny_text_dir):
    enc = TextEncoder.from_config(tiny_config(tiny_text_dir).text)
    enc.freeze_layers(2)
    enc.eval()
    samples = make_samples(enc.note_tokenizer(), 12, seed=7)
    cache = CachedTextEncoder(encoder=enc, samples=samples, batch_size=5, path=str(tmp_path / "c.safetensors"))
    for group in (samples[:4], samples[3:12], samples[6:7]):
        batch = collate(group, image_size=32).inputs
        with torch.no_grad():
            live = enc(batch.input_ids, batch.attention_mask, batch.keep)
        got = cache(batch.input_ids, batch.attention_mask, batch.keep)
        assert torch.equal(got.mask, live.mask)
        m = live.mask  # (B, K*L): the kept real tokens fusion reads
        assert torch.allclose(got.tokens[m], live.tokens[m], atol=1e-5)
    again = CachedTextEncoder(encoder=enc, samples=samples, path=str(tmp_path / "c.safetensors"))
    assert again.cache.keys() == cache.cache.keys()
    with pytest.raises(ValueError, match="fully frozen"):
        enc.freeze_layers(0)
        CachedTextEncoder(encoder=enc, samples=samples)
