"""Text warm-up: the top layers of a frozen encoder are fine-tuned on the notes, the rest is untouched, and the encoder
is frozen again afterwards (so the fused training can cache its features)."""

from __future__ import annotations

import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.checkpoint import build_model
from clinmm.errors import ConfigError
from clinmm.models.text_cache import FrozenTextCache, encoder_fingerprint
from clinmm.train import fit, seed_everything
from clinmm.training.text_warmup import check_warmup_config, warm_up_text_encoder


def _frozen_config(text_dir, **text):
    cfg = tiny_config(text_dir, epochs=1, batch_size=8)
    cfg.text.freeze_layers = 2  # the tiny BERT has 2 layers
    for k, v in text.items():
        setattr(cfg.text, k, v)
    return cfg


def test_warmup_trains_only_the_top_layers_then_refreezes(tiny_text_dir):
    cfg = _frozen_config(tiny_text_dir, warmup_epochs=2, warmup_layers=1, warmup_lr=1e-2)
    seed_everything(0)
    model = build_model(cfg, LABELS)
    enc = model.text_encoder
    assert enc.num_layers == 2 and not any(p.requires_grad for p in enc.parameters())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    fp_before = encoder_fingerprint(enc)
    tok = enc.note_tokenizer()
    result = warm_up_text_encoder(enc, make_samples(tok, 24, seed=0), make_samples(tok, 10, seed=1), config=cfg,
                                  device=torch.device("cpu"))
    after = enc.state_dict()
    top = [k for k in after if ".layer.1." in k]
    lower = [k for k in after if ".layer.0." in k or "embeddings" in k]
    assert top and lower
    assert any(not torch.equal(before[k], after[k]) for k in top), "the top layer did not train"
    assert all(torch.equal(before[k], after[k]) for k in lower), "a frozen layer changed"
    assert not any(p.requires_grad for p in enc.parameters()), "the encoder is not frozen again"
    assert enc.config.freeze_layers == 2
    assert result.layers == 1 and result.epochs_run == 2 and 0 <= result.best_epoch <= 1
    assert encoder_fingerprint(enc) != fp_before
    # the fused training then runs with the cached (adapted) features
    train = make_samples(tok, 16, seed=2)
    fitted = fit(model, train, make_samples(tok, 8, seed=3), config=cfg, device=torch.device("cpu"), pad_id=0,
                 progress=False)
    assert model.text_frozen() and len(model.text_cache) > 0 and len(fitted.history) == 1


def test_warmup_config_errors_name_the_key(tiny_text_dir):
    cfg = _frozen_config(tiny_text_dir, warmup_epochs=1)
    cfg.text.freeze_layers = 1
    model = build_model(cfg, LABELS)
    with pytest.raises(ConfigError, match="text.freeze_layers must be 2"):
        check_warmup_config(cfg, model.text_encoder)
    cfg.text.freeze_layers, cfg.text.warmup_layers = 2, 3
    with pytest.raises(ConfigError, match="text.warmup_layers must be in"):
        check_warmup_config(cfg, model.text_encoder)
    with pytest.raises(ConfigError, match="needs a text encoder"):
        check_warmup_config(cfg, None)
    with pytest.raises(ConfigError, match="frozen text encoder"):  # trainable layers at call time
        warm_up_text_encoder(model.text_encoder, [], [], config=cfg, device=torch.device("cpu"))


def test_text_cache_file_belongs_to_one_encoder(tiny_text_dir, tmp_path):
    cfg = _frozen_config(tiny_text_dir)
    model = build_model(cfg, LABELS)
    enc = model.text_encoder.eval()
    tok = enc.note_tokenizer()
    notes = [s.note for s in make_samples(tok, 6, seed=0) if s.note.input_ids.shape[0]]
    cache = FrozenTextCache(max_bytes=None)
    assert cache.fill(enc, notes, pad_id=0) == len(notes)
    path = tmp_path / "cache.safetensors"
    cache.save(path, tag=encoder_fingerprint(enc))
    assert FrozenTextCache().load(path, tag=encoder_fingerprint(enc)) == len(notes)
    with torch.no_grad():
        next(enc.parameters()).add_(1.0)  # another encoder's weights: the file must not be reused
    assert FrozenTextCache().load(path, tag=encoder_fingerprint(enc)) == 0
