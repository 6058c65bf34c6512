"""TextClassifier head: the optional shared readout (labels share one readout vector added to their own)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clinmm.config import TextEncoderConfig  # noqa: E402
from clinmm.models.text import TextEncoder, default_text_model_path  # noqa: E402
from clinmm.text.classifier import TextClassifier, encode_notes  # noqa: E402
from clinmm.text.tokenize import collate_notes  # noqa: E402

NOTES = ["There is no calcified granuloma.", "Findings consistent with left apical scarring and a tortuous aorta.",
         "Cardiomegaly."]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(default_text_model_path(), local_files_only=True)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _model(tiny_dir, *, shared_readout):
    torch.manual_seed(0)
    enc = TextEncoder.from_config(TextEncoderConfig(path=str(tiny_dir), max_length=16, stride=4))
    return TextClassifier(encoder=enc, num_labels=3, dropout=0.0, shared_readout=shared_readout).eval()


def _logits(model, texts):
    notes = encode_notes(model, texts)
    b = collate_notes(notes, pad_id=model.encoder.note_tokenizer().pad_id)
    return model(b["input_ids"], b["attention_mask"], b["keep"]).logits  # (B, C)


def test_shared_readout_is_optional_and_starts_as_the_plain_readout(tiny_dir):
    plain, shared = _model(tiny_dir, shared_readout=False), _model(tiny_dir, shared_readout=True)
    assert plain.shared_weight is None and "shared_weight" not in plain.state_dict()
    assert shared.shared_weight is not None and shared.shared_weight.shape == (shared.encoder.hidden_size,)
    missing, unexpected = shared.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["shared_weight"] and not unexpected
    with torch.no_grad():
        torch.testing.assert_close(_logits(shared, NOTES), _logits(plain, NOTES), atol=1e-6, rtol=0)
        shared.shared_weight.normal_(std=0.5)  # (not a constant: LayerNorm-ed values are zero-mean over H)
        assert not torch.allclose(_logits(shared, NOTES), _logits(plain, NOTES), atol=1e-3)


def test_every_label_trains_the_shared_readout(tiny_dir):
    model = _model(tiny_dir, shared_readout=True)
    for c in range(model.num_labels):  # a loss on one label alone moves u exactly as it moves that label's w_c
        model.zero_grad(set_to_none=True)
        _logits(model, NOTES)[:, c].sum().backward()
        assert model.shared_weight.grad is not None and model.shared_weight.grad.abs().sum() > 0
        torch.testing.assert_close(model.shared_weight.grad, model.weight.grad[c], atol=1e-6, rtol=1e-5)
        others = [k for k in range(model.num_labels) if k != c]
        assert torch.count_nonzero(model.weight.grad[others]) == 0


def test_shared_readout_keeps_padding_invariance(tiny_dir):
    model = _model(tiny_dir, shared_readout=True)
    with torch.no_grad():
        model.shared_weight.normal_(std=0.1)
        alone = _logits(model, NOTES[2:])
        batched = _logits(model, NOTES)  # the short note is padded to the longest companion
    torch.testing.assert_close(batched[2:], alone, atol=1e-5, rtol=0)
