"""``train.rotation_equivariance``: the image tokens' 180° rotation equivariance error, its loss term and its
training effect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.checkpoint import build_model
from clinmm.config import FusionConfig, TrainConfig
from clinmm.data.dataset import collate
from clinmm.models.classifier import ClinmmOutput
from clinmm.models.image import ImageFeatures
from clinmm.models.losses import joint_loss_terms
from clinmm.train import fit, seed_everything


def _cell_means(shift: int = 0):
    """A stand-in encoder: each token holds its 8 × 8 cell's mean and a few powers of it (equivariant under any
    permutation of cells that moves the pixels with them); ``shift`` reads every cell ``shift`` columns to the right
    of where it is (a learned offset), which a turn does not commute with."""

    def forward_features(x: torch.Tensor) -> ImageFeatures:
        x = torch.roll(x, shifts=-shift, dims=-1)
        cells = F.avg_pool2d(x, 8)  # (B, 1, h, w)
        feats = torch.cat([cells, cells.pow(2), cells.pow(3), cells.sqrt()], 1)  # (B, 4, h, w)
        b, c, h, w = feats.shape
        return ImageFeatures(tokens=feats.flatten(2).transpose(1, 2), grid=(h, w))  # (B, h*w, 4)

    return forward_features


def _model(tiny_text_dir, monkeypatch, *, shift: int):
    torch.manual_seed(0)
    model = build_model(tiny_config(tiny_text_dir), LABELS).eval()
    monkeypatch.setattr(model.image_encoder, "forward_features", _cell_means(shift))
    model.image_proj = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.LayerNorm(16))  # 4 features → D
    return model


def test_error_is_zero_for_an_equivariant_encoder_and_not_for_an_offset_one(tiny_text_dir, monkeypatch):
    image = torch.rand(3, 1, 32, 48)  # non-square: the turn must reverse rows and columns of a 4 × 6 grid
    present = torch.tensor([True, True, False])
    with torch.no_grad():
        for shift, check in ((0, lambda e: e < 1e-10), (8, lambda e: e > 0.05)):
            model = _model(tiny_text_dir, monkeypatch, shift=shift)
            tokens, _, grid = model.forward_image(image, present)
            assert grid == (4, 6)
            err = model.rotation_equivariance(image, tokens, grid, present)
            assert err.shape == (3,) and torch.isnan(err[2]), err
            assert all(check(float(e)) for e in err[:2]), (shift, err)


def test_error_of_a_transposed_map_is_not_zero(tiny_text_dir, monkeypatch):
    """Reading the grid back in the wrong order (rows for columns) must not pass as equivariant."""
    model = _model(tiny_text_dir, monkeypatch, shift=0)
    image = torch.rand(2, 1, 32, 32)
    present = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        tokens, _, grid = model.forward_image(image, present)
        transposed = tokens.reshape(2, *grid, -1).transpose(1, 2).reshape(2, grid[0] * grid[1], -1)
        assert (model.rotation_equivariance(image, transposed, grid, present) > 0.05).all()


def test_a_single_token_grid_is_refused(tiny_text_dir, monkeypatch):
    model = _model(tiny_text_dir, monkeypatch, shift=0)
    image = torch.rand(2, 1, 8, 8)
    tokens, _, grid = model.forward_image(image, torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="2 or more tokens"):
        model.rotation_equivariance(image, tokens, grid, torch.ones(2, dtype=torch.bool))


def test_loss_term_averages_over_images_only():
    out = ClinmmOutput(logits=torch.zeros(3, 2), image_equivariance=torch.tensor([0.2, float("nan"), 0.6]))
    targets = torch.zeros(3, 2)
    on = joint_loss_terms(out, targets, fusion=FusionConfig(aux_image_weight=0, aux_text_weight=0),
                          train=TrainConfig(rotation_equivariance=0.5))
    term = {t.name: t for t in on}["equivariance"]
    assert term.weight == 0.5 and float(term.count) == 2 and float(term.total) == pytest.approx(0.8)
    off = joint_loss_terms(out, targets, fusion=FusionConfig(aux_image_weight=0, aux_text_weight=0),
                           train=TrainConfig())
    assert [t.name for t in off] == ["fused"]


def _mean_error(model, samples) -> float:
    batch = collate(samples, image_size=32)
    with torch.no_grad():
        out = model.eval()(batch.inputs, equivariance=True)
    return float(out.image_equivariance.nanmean())


def test_training_with_the_term_lowers_the_error(tiny_text_dir):
    """Same seed, same data: a fit with the term ends with image tokens nearer equivariant than a fit without it."""
    errors = {}
    for weight in (0.0, 2.0):
        cfg = tiny_config(tiny_text_dir, epochs=3, batch_size=8, rotation_equivariance=weight)
        seed_everything(0)
        model = build_model(cfg, LABELS)
        tok = model.text_encoder.note_tokenizer()
        train, val = make_samples(tok, 24, seed=0), make_samples(tok, 8, seed=1)
        before = _mean_error(model, val)
        fit(model, train, val, config=cfg, device=torch.device("cpu"), pad_id=0, progress=False)
        errors[weight] = (before, _mean_error(model, val))
    assert errors[0.0][0] == pytest.approx(errors[2.0][0])  # the same start
    assert errors[2.0][1] < 0.5 * errors[0.0][1], errors

