"""TextEncoder: shapes, padding invariance, empty notes, attentions, load by path, offline hub-name error, rebuild."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clinmm.config import TextEncoderConfig  # noqa: E402
from clinmm.errors import TextModelError  # noqa: E402
from clinmm.models.text import TextEncoder, default_text_model_path  # noqa: E402
from clinmm.text.tokenize import collate_notes  # noqa: E402

KEYS = ("input_ids", "attention_mask", "keep")
SHORT = "Cough and fever for three days."
LONG = (
    "Indication: shortness of breath. Findings: the heart is mildly enlarged. There is a small left pleural effusion "
    "with adjacent atelectasis. No pneumothorax. Degenerative changes of the thoracic spine. Impression: cardiomegaly "
    "with small effusion, follow-up recommended."
)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    enc = TextEncoder.from_config(TextEncoderConfig(max_length=24, stride=6))
    enc.eval()
    return enc


def _run(enc, notes, **kw):
    batch = collate_notes(notes)
    with torch.no_grad():
        return enc(*(batch[k] for k in KEYS), **kw)


def _logit(feats, b, head):
    tok = feats.tokens[b][feats.mask[b]]  # (N, H)
    return head(tok.mean(0))


def test_shapes_and_mask(encoder):
    nt = encoder.note_tokenizer()
    notes = [nt.encode(SHORT), nt.encode(LONG), nt.encode(None)]
    batch = collate_notes(notes)
    B, K, L = batch["input_ids"].shape
    assert K > 1 and L == 24
    out = _run(encoder, notes)
    assert out.tokens.shape == (B, K * L, encoder.hidden_size) == (3, K * L, 384)
    assert out.mask.shape == (B, K * L) and out.mask.dtype == torch.bool
    assert torch.equal(out.mask, (batch["attention_mask"].bool() & batch["keep"]).reshape(B, K * L))
    assert int(out.mask[0].sum()) == notes[0].num_tokens and int(out.mask[1].sum()) == notes[1].num_tokens
    assert not out.mask[2].any() and out.tokens[2].abs().sum() == 0  # empty note: nothing computed, nothing kept
    assert torch.isfinite(out.tokens).all() and out.attentions is None


def test_padding_invariance(encoder):
    """Kept token states and a head's logit do not depend on padding length or on batch companions (atol 1e-5)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(encoder.hidden_size, 3)
    nt = encoder.note_tokenizer()
    alone = _run(encoder, [nt.encode(SHORT)])
    ref_tok = alone.tokens[0][alone.mask[0]]
    ref_logit = _logit(alone, 0, head)
    for companions in ([LONG], [LONG, None, "Fever."], [None]):
        notes = [nt.encode(t) for t in companions] + [nt.encode(SHORT)]
        out = _run(encoder, notes)
        b = len(notes) - 1
        torch.testing.assert_close(out.tokens[b][out.mask[b]], ref_tok, atol=1e-5, rtol=0)
        torch.testing.assert_close(_logit(out, b, head), ref_logit, atol=1e-5, rtol=0)
    # explicit extra padding in both K and L
    batch = collate_notes([nt.encode(SHORT)])
    padded = {}
    for k in KEYS:
        x = batch[k]
        p = torch.zeros((1, 3, 40), dtype=x.dtype)
        p[:, : x.shape[1], : x.shape[2]] = x
        padded[k] = p
    with torch.no_grad():
        out = encoder(*(padded[k] for k in KEYS))
    torch.testing.assert_close(out.tokens[0][out.mask[0]], ref_tok, atol=1e-5, rtol=0)
    torch.testing.assert_close(_logit(out, 0, head), ref_logit, atol=1e-5, rtol=0)


def test_attentions_switch_to_eager_and_back(encoder):
    nt = encoder.note_tokenizer()
    sdpa = _run(encoder, [nt.encode(LONG), nt.encode(None)])
    out = _run(encoder, [nt.encode(LONG), nt.encode(None)], output_attentions=True)
    assert encoder.model.config._attn_implementation == "sdpa"
    B, KL, _ = out.tokens.shape
    K = nt.encode(LONG).num_chunks
    assert len(out.attentions) == encoder.model.config.num_hidden_layers
    att = out.attentions[-1]
    assert att.shape == (2, K, encoder.model.config.num_attention_heads, 24, 24)
    rows = att[0, 0].sum(-1)  # (heads, L): real query rows sum to 1
    assert torch.allclose(rows[:, 0], torch.ones_like(rows[:, 0]), atol=1e-4)
    assert att[1].abs().sum() == 0
    torch.testing.assert_close(out.tokens[out.mask], sdpa.tokens[sdpa.mask], atol=1e-4, rtol=0)


def test_freeze_layers(encoder):
    encoder.freeze_layers(3)
    try:
        assert not any(p.requires_grad for p in encoder.model.embeddings.parameters())
        assert not any(p.requires_grad for p in encoder.model.encoder.layer[2].parameters())
        assert all(p.requires_grad for p in encoder.model.encoder.layer[3].parameters())
        with pytest.raises(ValueError, match="freeze_layers"):
            encoder.freeze_layers(7)
    finally:
        encoder.freeze_layers(0)


def test_hub_name_fails_fast_offline():
    t0 = time.monotonic()
    with pytest.raises(TextModelError, match="local directory") as info:
        TextEncoder.from_config(TextEncoderConfig(path="emilyalsentzer/Bio_ClinicalBERT"))
    assert time.monotonic() - t0 < 5.0
    assert "hub name" in str(info.value) and "text.path" in str(info.value)
    with pytest.raises(TextModelError, match="does not exist"):
        TextEncoder.from_config(TextEncoderConfig(path="/nonexistent/clinmm/model"))


def _train_steps(enc: TextEncoder, steps: int = 12) -> tuple[float, float]:
    """A few optimiser steps of a tiny classifier on two sentences; returns (first loss, last loss)."""
    torch.manual_seed(0)
    nt = enc.note_tokenizer()
    batch = collate_notes([nt.encode("pleural effusion present"), nt.encode("lungs are clear")])
    y = torch.tensor([1.0, 0.0])
    head = torch.nn.Linear(enc.hidden_size, 1)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad] + list(head.parameters()), lr=1e-3)
    enc.train()
    losses = []
    for _ in range(steps):
        feats = enc(*(batch[k] for k in KEYS))
        m = feats.mask.float().unsqueeze(-1)  # (B, K*L, 1)
        pooled = (feats.tokens * m).sum(1) / m.sum(1)  # (B, H)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(pooled).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    enc.eval()
    return losses[0], losses[-1]


def test_minilm_copy_loads_by_path_and_trains(tmp_path):
    dst = tmp_path / "minilm"
    shutil.copytree(default_text_model_path(), dst)
    enc = TextEncoder.from_config(TextEncoderConfig(path=str(dst), max_length=16, stride=4, freeze_layers=4))
    assert enc.hidden_size == 384
    first, last = _train_steps(enc)
    assert last < first


def test_tiny_random_bert_loads_by_path_and_trains(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(default_text_model_path(), local_files_only=True)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=256, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    enc = TextEncoder.from_config(TextEncoderConfig(path=str(tmp_path / "tiny"), max_length=16, stride=4))
    assert enc.hidden_size == 128
    first, last = _train_steps(enc)
    assert last < first
    with pytest.raises(TextModelError, match="max_position_embeddings"):
        TextEncoder.from_config(TextEncoderConfig(path=str(tmp_path / "tiny"), max_length=128))


def test_save_config_and_rebuild_without_original_path(encoder, tmp_path):
    written = encoder.save_pretrained_config(tmp_path / "text_encoder")
    names = {p.name for p in written}
    assert {"config.json", "clinmm_text.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".safetensors", ".bin")) for n in names)
    rebuilt = TextEncoder.from_saved(tmp_path / "text_encoder")
    assert rebuilt.config.max_length == 24 and rebuilt.config.stride == 6
    missing, unexpected = rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    assert not missing and not unexpected
    rebuilt.eval()
    nt = rebuilt.note_tokenizer()
    a, b = _run(encoder, [nt.encode(LONG)]), _run(rebuilt, [nt.encode(LONG)])
    torch.testing.assert_close(a.tokens, b.tokens, atol=1e-6, rtol=0)
    with pytest.raises(TextModelError, match="config.json"):
        TextEncoder.from_saved(tmp_path / "nothing")


def test_frozen_state_cache_matches_full_forward(encoder):
    nt = encoder.note_tokenizer()
    batch = collate_notes([nt.encode(LONG), nt.encode(None), nt.encode(SHORT)])
    encoder.freeze_layers(4)
    try:
        cache = encoder.frozen_states(batch["input_ids"], batch["attention_mask"])
        assert cache.shape == (*batch["input_ids"].shape, encoder.hidden_size)
        with torch.no_grad():
            full = encoder(*(batch[k] for k in KEYS))
            fast = encoder(*(batch[k] for k in KEYS), frozen=cache)
        torch.testing.assert_close(fast.tokens[fast.mask], full.tokens[full.mask], atol=1e-5, rtol=0)
        assert torch.equal(fast.mask, full.mask)
    finally:
        encoder.freeze_layers(0)


def test_directory_without_weights_is_a_text_model_error(tmp_path):
    d = tmp_path / "noweights"
    d.mkdir()
    shutil.copy(os.path.join(default_text_model_path(), "config.json"), d / "config.json")
    with pytest.raises(TextModelError, match="cannot load a text encoder"):
        TextEncoder.from_config(TextEncoderConfig(path=str(d)))
    with pytest.raises(TextModelError, match="no config.json"):
        TextEncoder.from_config(TextEncoderConfig(path=str(tmp_path)))
