"""``train.note_branch_epochs``: the note-only layers train on a shorter schedule, then hold, while the rest trains
on."""

from __future__ import annotations

import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.checkpoint import build_model
from clinmm.train import fit, seed_everything


def _run(cfg):
    seed_everything(cfg.train.seed)
    model = build_model(cfg, LABELS)
    tok = model.text_encoder.note_tokenizer()
    train, val = make_samples(tok, 20, seed=0), make_samples(tok, 8, seed=1)
    fit(model, train, val, config=cfg, device=torch.device("cpu"), pad_id=0, progress=False)
    return model


@pytest.mark.parametrize("separate", [False, True])
def test_note_branch_holds_after_its_epochs(tiny_text_dir, separate):
    cfg = tiny_config(tiny_text_dir, epochs=3, batch_size=8)
    cut = tiny_config(tiny_text_dir, epochs=3, batch_size=8, max_train_seconds=1e-9)  # stops after epoch 1
    for c in (cfg, cut):
        c.train.note_branch_epochs = 1
        c.fusion.separate_note_attention = separate
    after_one, after_three = _run(cut), _run(cfg)
    note = {id(p) for p in after_three.note_branch_parameters()}
    names = {n for n, p in after_three.named_parameters() if id(p) in note}
    assert any(n.startswith("text_proj.") for n in names) and any(n.startswith("fusion.mix_text") for n in names)
    assert not any(n.startswith(("image_", "fusion.queries", "fusion.attn")) for n in names)
    # with its own attention, all of the note's reading holds: queries, key normalisation and attention weights
    assert ({"fusion.note_queries", "fusion.note_key_norm.weight", "fusion.note_attn.in_proj_weight",
             "fusion.note_attn.out_proj.weight"} <= names) == separate
    a, b = after_one.state_dict(), after_three.state_dict()
    for n in names:
        assert torch.equal(a[n], b[n]), f"{n} moved after its schedule ended"
    moved = [n for n, p in after_three.named_parameters() if p.requires_grad and id(p) not in note
             and not n.startswith("text_encoder.") and not torch.equal(a[n], b[n])]
    assert any(n.startswith("fusion.attn") for n in moved) and any(n.startswith("image_encoder.") for n in moved)


def test_note_branch_of_unimodal_models(tiny_text_dir):
    text_only = build_model(tiny_config(tiny_text_dir, method="text_only"), LABELS)
    image_only = build_model(tiny_config(tiny_text_dir, method="image_only"), LABELS)
    fusion = {id(p) for p in text_only.fusion.parameters()}
    assert fusion <= {id(p) for p in text_only.note_branch_parameters()}
    assert image_only.note_branch_parameters() == []


@pytest.mark.parametrize(("section", "key", "value", "match"), [
    ("train", "note_branch_epochs", -1, "note_branch_epochs must be >= 0"),
    ("fusion", "text_token_dropout", 1.0, r"text_token_dropout must be in \[0, 1\)"),
    ("fusion", "image_token_dropout", -0.1, r"image_token_dropout must be in \[0, 1\)"),
    ("train", "rotation_equivariance", -1.0, "rotation_equivariance must be >= 0"),
])
def test_out_of_range_settings_are_refused(tiny_text_dir, section, key, value, match):
    cfg = tiny_config(tiny_text_dir, epochs=1, batch_size=8)
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ValueError, match=match):
        _run(cfg)
