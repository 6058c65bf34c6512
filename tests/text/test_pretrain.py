"""MLM domain-adaptive pretraining: lowers held-out MLM loss; the output is a loadable text encoder directory."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clinmm.config import TextEncoderConfig  # noqa: E402
from clinmm.models.text import TextEncoder, default_text_model_path  # noqa: E402
from clinmm.text.pretrain import pretrain_mlm, read_notes_csv  # noqa: E402


def _corpus(n, seed):
    rng = random.Random(seed)
    finds = ["pleural effusion", "cardiomegaly", "atelectasis", "pneumothorax", "consolidation"]
    sides = ["left", "right", "bilateral"]
    out = []
    for _ in range(n):
        f, s = rng.choice(finds), rng.choice(sides)
        out.append(f"Findings: there is a small {s} {f}. Impression: {s} {f}, no other acute process.")
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(default_text_model_path(), local_files_only=True)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)  # a bare encoder, like MiniLM: no MLM head
    tok.save_pretrained(d)
    return d


@pytest.mark.slow
def test_pretraining_lowers_heldout_loss_and_output_loads(tiny_dir, tmp_path):
    out = tmp_path / "adapted"
    res = pretrain_mlm(_corpus(300, 0), out, base_path=tiny_dir, heldout_notes=_corpus(40, 1), max_length=32,
                       epochs=3, batch_size=16, lr=3e-3, seed=0)
    assert res.steps > 0 and res.n_heldout == 40
    assert res.heldout_loss_after < res.heldout_loss_before - 0.5, res
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["result"]["heldout_loss_after"] == res.heldout_loss_after
    enc = TextEncoder.from_config(TextEncoderConfig(path=str(out), max_length=32, stride=8))
    base = TextEncoder.from_config(TextEncoderConfig(path=str(tiny_dir), max_length=32, stride=8))
    w_new = enc.model.embeddings.word_embeddings.weight
    w_old = base.model.embeddings.word_embeddings.weight
    assert w_new.shape == w_old.shape and not torch.allclose(w_new, w_old)  # weights adapted, architecture kept


def test_few_steps_write_a_loadable_encoder(tiny_dir, tmp_path):
    out = tmp_path / "adapted"
    res = pretrain_mlm(_corpus(40, 0), out, base_path=tiny_dir, max_length=32, batch_size=8, max_steps=2, seed=0)
    assert res.steps == 2 and res.n_heldout == 4 and res.heldout_loss_before > 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    enc = TextEncoder.from_config(TextEncoderConfig(path=str(out), max_length=32, stride=8))
    assert enc.hidden_size == 64


def test_read_notes_csv(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_text("id,indication,findings\n1,cough,clear lungs\n2,,\n3,fever,\n", encoding="utf-8")
    assert read_notes_csv(p, columns=["indication", "findings"]) == ["cough\nclear lungs", "fever"]
    from clinmm.errors import ManifestError

    with pytest.raises(ManifestError, match="note_text"):
        read_notes_csv(p)
