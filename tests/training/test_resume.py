"""Resumable training state: an interrupted run resumed from OUT/.train_state ends with the same weights as an
uninterrupted one; the state is safetensors + JSON only and refuses a different configuration."""

from __future__ import annotations

import json

import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.checkpoint import build_model
from clinmm.errors import CheckpointError
from clinmm.train import fit, seed_everything
from clinmm.training.state import config_fingerprint, load_train_state


def _run(cfg, out, *, resume=False):
    seed_everything(cfg.train.seed)
    model = build_model(cfg, LABELS)
    tok = model.text_encoder.note_tokenizer()
    train, val = make_samples(tok, 20, seed=0), make_samples(tok, 8, seed=1)
    result = fit(model, train, val, config=cfg, device=torch.device("cpu"), pad_id=0, out=out, resume=resume,
                 progress=False, fingerprint="fp")
    return model, result


def test_resume_equals_uninterrupted(tmp_path, tiny_text_dir):
    cfg = tiny_config(tiny_text_dir, epochs=3, batch_size=8)
    cfg.fusion.dropout = 0.2  # dropout draws come from the global RNG, which the state restores
    cfg.fusion.modality_dropout = 0.3
    full, full_result = _run(cfg, tmp_path / "full")

    cut = tiny_config(tiny_text_dir, epochs=3, batch_size=8, max_train_seconds=1e-9)  # stops after epoch 1
    cut.fusion.dropout, cut.fusion.modality_dropout = 0.2, 0.3
    _, first = _run(cut, tmp_path / "cut")
    assert len(first.history) == 1
    files = sorted(p.name for p in (tmp_path / "cut" / ".train_state").iterdir())
    assert files == ["best.safetensors", "model.safetensors", "optimizer.safetensors", "rng.safetensors",
                     "state.json", "training_log.csv"]
    assert json.loads((tmp_path / "cut" / ".train_state" / "state.json").read_text())["epoch"] == 1

    resumed, second = _run(cfg, tmp_path / "cut", resume=True)
    assert second.resumed_from_epoch == 1
    assert [h["epoch"] for h in second.history] == [1, 2, 3]
    a, b = full.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    assert second.best_epoch == full_result.best_epoch
    assert abs(second.best_auroc - full_result.best_auroc) < 1e-9


def test_state_refuses_other_config_and_garbage(tmp_path, tiny_text_dir):
    cfg = tiny_config(tiny_text_dir, epochs=1)
    _run(cfg, tmp_path)
    assert load_train_state(tmp_path, fingerprint="fp") is not None
    with pytest.raises(CheckpointError, match="different configuration"):
        load_train_state(tmp_path, fingerprint="other")
    (tmp_path / ".train_state" / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_train_state(tmp_path)
    assert load_train_state(tmp_path / "nowhere") is None


def test_fingerprint_ignores_epochs_and_device_only(tiny_text_dir):
    from clinmm.config import config_to_dict

    a = tiny_config(tiny_text_dir, epochs=2)
    b = tiny_config(tiny_text_dir, epochs=9, device="cuda")
    c = tiny_config(tiny_text_dir, epochs=2, lr_head=0.5)
    fa, fb, fc = (config_fingerprint(config_to_dict(x), LABELS) for x in (a, b, c))
    assert fa == fb and fa != fc
