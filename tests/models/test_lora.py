"""LoRA on the text encoder: only adapters train, base weights stay bit-identical, adapters save and load back."""

from __future__ import annotations

import pytest
import torch
from clinmm_tiny import tiny_config

from clinmm.models.lora import apply_text_lora, count_parameters, load_text_adapter, save_text_adapter
from clinmm.models.text import TextEncoder
from clinmm.text.tokenize import collate_notes


def _batch(enc):
    tok = enc.note_tokenizer()
    notes = [tok.encode(t) for t in ("Presents with fever and chills.", "No shortness of breath today.")]
    return collate_notes(notes)


def test_lora_trains_adapters_only_and_round_trips(tmp_path, tiny_text_dir):
    cfg = tiny_config(tiny_text_dir).text
    enc = TextEncoder.from_config(cfg)
    base = {k: v.clone() for k, v in enc.model.state_dict().items()}
    count = apply_text_lora(enc, r=4)
    assert 0 < count.trainable < 0.2 * count.total
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    b = _batch(enc)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = enc(b["input_ids"], b["attention_mask"], b["keep"]).tokens.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        trained_out = enc(b["input_ids"], b["attention_mask"], b["keep"]).tokens
    # base weights unchanged (peft keeps them under base_layer)
    wrapped = enc.model.get_base_model().state_dict()
    for k, v in base.items():
        key = k if k in wrapped else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(wrapped[key], v), k
    save_text_adapter(enc, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    fresh = TextEncoder.from_config(cfg)
    load_text_adapter(fresh, tmp_path / "adapter")
    fresh.eval()
    with torch.no_grad():
        again = fresh(b["input_ids"], b["attention_mask"], b["keep"]).tokens
    assert torch.allclose(trained_out, again, atol=1e-6)
    fresh_base = fresh.model.get_base_model().state_dict()
    for k, v in base.items():
        key = k if k in fresh_base else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(fresh_base[key], v), k
    assert count_parameters(fresh).trainable == 0  # loaded for inference


def test_errors(tmp_path, tiny_text_dir):
    enc = TextEncoder.from_config(tiny_config(tiny_text_dir).text)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        save_text_adapter(enc, tmp_path / "x")
    from clinmm.errors import CheckpointError

    with pytest.raises(CheckpointError, match="adapter_config.json"):
        load_text_adapter(enc, tmp_path)
    apply_text_lora(enc, r=2)
    with pytest.raises(ValueError, match="already"):
        apply_text_lora(enc, r=2)
