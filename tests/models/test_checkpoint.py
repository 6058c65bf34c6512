"""Checkpoint directories: identical logits after a round trip (plain and LoRA), tampering refused, no pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.calibration import fit_calibration
from clinmm.checkpoint import build_model, load_checkpoint, save_checkpoint
from clinmm.data.dataset import collate
from clinmm.errors import CheckpointError, ChecksumError


def _save(tmp_path, cfg, name="ckpt"):
    torch.manual_seed(0)
    model = build_model(cfg, LABELS).eval()
    with torch.no_grad():  # make the weights non-trivial (e.g. LoRA B matrices start at zero)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    samples = make_samples(model.text_encoder.note_tokenizer(), 12, seed=1)
    batch = collate(samples, image_size=cfg.data.image_size)
    with torch.no_grad():
        logits = model(batch.inputs).logits
    y = np.stack([s.labels for s in samples])
    cal = fit_calibration(logits.numpy(), y)
    path = save_checkpoint(tmp_path / name, model=model, config=cfg, labels=LABELS, calibration=cal,
                           scope={"modalities": ["DX"]}, model_card={"name": "t"}, reference={})
    return path, batch, logits


@pytest.mark.parametrize("lora", [False, True])
def test_round_trip_identical_logits(tmp_path, tiny_text_dir, lora):
    cfg = tiny_config(tiny_text_dir)
    cfg.text.lora = lora
    path, batch, logits = _save(tmp_path, cfg)
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pt")) and not list(path.rglob("*.pkl"))
    loaded = load_checkpoint(path)
    with torch.no_grad():
        again = loaded.model(batch.inputs).logits
    assert torch.equal(logits, again)
    assert loaded.labels == LABELS and len(loaded.calibration) == len(LABELS)
    if lora:
        assert any("lora_A" in k for k in loaded.model.state_dict())


def test_tampered_files_are_refused(tmp_path, tiny_text_dir):
    path, _, _ = _save(tmp_path, tiny_config(tiny_text_dir))
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped bit pattern inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.safetensors.*refusing to load"):
        load_checkpoint(path)

    path2, _, _ = _save(tmp_path, tiny_config(tiny_text_dir), name="ckpt2")
    cfg = json.loads((path2 / "labels.json").read_text())
    cfg["calibration"][0]["threshold"] = 0.01  # an edited threshold is tampering too
    (path2 / "labels.json").write_text(json.dumps(cfg))
    with pytest.raises(ChecksumError, match="labels.json"):
        load_checkpoint(path2)

    path3, _, _ = _save(tmp_path, tiny_config(tiny_text_dir), name="ckpt3")
    (path3 / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json.*missing"):
        load_checkpoint(path3)
    (path3 / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not a clinmm checkpoint"):
        load_checkpoint(path3)


def test_train_state_is_kept_outside_the_manifest(tmp_path, tiny_text_dir):
    (tmp_path / "ckpt" / ".train_state").mkdir(parents=True)
    (tmp_path / "ckpt" / ".train_state" / "state.json").write_text("{}")
    path, _, _ = _save(tmp_path, tiny_config(tiny_text_dir))
    assert (path / ".train_state" / "state.json").is_file()
    files = json.loads((path / "manifest.json").read_text())["files"]
    assert not any(name.startswith(".train_state") for name in files)
    load_checkpoint(path)
