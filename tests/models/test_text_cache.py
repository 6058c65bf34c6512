"""The frozen-text-encoder cache returns exactly what the encoder returns, whatever the batch padding."""

from __future__ import annotations

import pytest
import torch

from clinmm.config import TextEncoderConfig
from clinmm.models.text import TextEncoder
from clinmm.models.text_cache import FrozenTextCache
from clinmm.text.tokenize import collate_notes


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    enc = TextEncoder.from_config(TextEncoderConfig(max_length=32, stride=8, freeze_layers=6))
    enc.eval()
    return enc


def test_cache_matches_encoder_across_paddings(encoder: TextEncoder) -> None:
    tok = encoder.note_tokenizer()
    short = tok.encode("No fever. Mild dyspnea on exertion.")
    long = tok.encode("History: " + "chronic cough and wheeze, " * 12 + "now febrile.")
    cache = FrozenTextCache()
    for notes in ([short, long], [short], [long, short, short]):
        batch = collate_notes(notes)
        with torch.no_grad():
            ref = encoder(batch["input_ids"], batch["attention_mask"], batch["keep"])
        tokens, mask = cache(encoder, batch["input_ids"], batch["attention_mask"], batch["keep"])
        assert torch.equal(mask, ref.mask)
        torch.testing.assert_close(tokens[mask], ref.tokens[mask], atol=1e-5, rtol=1e-5)
    assert len(cache) == 2 and cache.hits >= 3 and cache.nbytes > 0
