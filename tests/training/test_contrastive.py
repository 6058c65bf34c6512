"""Contrastive pretraining: InfoNCE and recall@K are right; a pretraining run on the committed tiny set writes a
checked encoder file (LoRA merged) that initialises a classifier; tampering is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clinmm_tiny import tiny_config

from clinmm.contrastive import info_nce, pretrain_contrastive, retrieval_recall
from clinmm.errors import ChecksumError

TINY = Path(__file__).parents[2] / "sample_data" / "tiny" / "manifest.csv"


def test_info_nce_prefers_aligned_pairs():
    aligned = torch.eye(6) * 10.0
    shuffled = aligned[torch.randperm(6, generator=torch.Generator().manual_seed(0))]
    assert info_nce(aligned) < 0.01
    assert info_nce(shuffled) > info_nce(aligned) + 1.0
    assert torch.isclose(info_nce(torch.zeros(6, 6)), torch.log(torch.tensor(6.0)))


def test_retrieval_recall():
    z = np.eye(8)
    assert retrieval_recall(z, z)["recall@1"] == 1.0
    rolled = np.roll(np.eye(8), 1, axis=0)  # every image is closest to a wrong note
    r = retrieval_recall(z, rolled, ks=(1, 5))
    assert r["recall@1"] == 0.0 and r["n"] == 8


@pytest.mark.skipif(not TINY.is_file(), reason="sample_data/tiny is not in this checkout")
def test_pretrain_with_lora_then_init_classifier(tmp_path, tiny_text_dir):
    from clinmm.checkpoint import build_model
    from clinmm.train import load_init_weights

    cfg = tiny_config(tiny_text_dir, batch_size=8)
    result = pretrain_contrastive(TINY, tmp_path / "pre", config=cfg, epochs=2, text_lora=True, progress=False)
    out = tmp_path / "pre"
    for name in ("encoders.safetensors", "contrastive_head.safetensors", "config.json", "metrics.json",
                 "manifest.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["parameters"]["text_trainable"] < metrics["parameters"]["text_total"]  # LoRA only
    assert len(result.history) == 2 and all(np.isfinite(h["loss"]) for h in result.history)
    assert "recall@5" in result.recall_pretrained and "recall@5" in result.recall_random

    from safetensors.torch import load_file

    saved = load_file(str(out / "encoders.safetensors"))
    assert any(k.startswith("text_encoder.") for k in saved) and not any("lora_" in k for k in saved)
    model = build_model(cfg, ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"])
    n = load_init_weights(model, out)
    assert n == len(saved)
    for k, v in saved.items():
        assert torch.equal(model.state_dict()[k], v), k

    data = bytearray((out / "encoders.safetensors").read_bytes())
    data[-5] ^= 0x01
    (out / "encoders.safetensors").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="encoders.safetensors"):
        load_init_weights(model, out)
