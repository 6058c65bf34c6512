"""Integrated gradients: completeness (attributions sum to the logit change) and chunked steps = unchunked steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinmm.explain._forward import ImageToLogits, TextToLogits
from clinmm.explain.attribution import blur_baseline, integrated_gradients_image, integrated_gradients_text
from clinmm.io.study import ImageVolume


@pytest.fixture(scope="module")
def study(tiny_predictor):
    rng = np.random.default_rng(1)
    pixels = rng.random((1, 70, 64)).astype(np.float32)
    pixels[0, 10:20, 10:20] += 2.0
    vol = ImageVolume(pixels=pixels, display=np.clip(pixels, 0, 1), modality="CR")
    sample = tiny_predictor.prepare(vol, "Patient febrile since Monday. No shortness of breath.")
    return tiny_predictor.collate([sample]).inputs


def test_image_ig_completeness_and_chunking(tiny_predictor, study):
    net = tiny_predictor.loaded.model
    attr = integrated_gradients_image(net, study, label_index=0, n_steps=48, internal_batch_size=16)
    assert attr.shape == (64, 64) and np.isfinite(attr).all()
    f = ImageToLogits(model=net, inputs=study).eval()
    with torch.no_grad():
        x = study.image.float()
        delta = float(f(x)[0, 0] - f(blur_baseline(x))[0, 0])
    assert attr.sum() == pytest.approx(delta, rel=0.1, abs=2e-3)
    small = integrated_gradients_image(net, study, label_index=0, n_steps=6, internal_batch_size=2)
    full = integrated_gradients_image(net, study, label_index=0, n_steps=6, internal_batch_size=None)
    np.testing.assert_allclose(small, full, rtol=1e-3, atol=1e-6)


def test_text_ig_completeness(tiny_predictor, study):
    net = tiny_predictor.loaded.model
    attr = integrated_gradients_text(net, study, label_index=2, n_steps=32, internal_batch_size=8,
                                     pad_id=tiny_predictor.pad_id)
    n_kept = int(study.keep.sum())
    assert attr.shape == (n_kept,) and np.isfinite(attr).all()
    ids, am, keep = study.input_ids, study.attention_mask, study.keep
    special = torch.zeros_like(ids, dtype=torch.bool)
    for sid in net.text_encoder.tokenizer.all_special_ids:
        special |= ids == sid
    base = torch.where(special | (am == 0), ids, torch.full_like(ids, tiny_predictor.pad_id))
    f = TextToLogits(model=net, inputs=study).eval()
    with torch.no_grad():
        delta = float(f(ids, am, keep)[0, 2] - f(base, am, keep)[0, 2])
    # one window here, so every non-special token is kept: the kept attributions carry the whole change
    assert attr.sum() == pytest.approx(delta, rel=0.1, abs=2e-3)
    assert attr[0] == 0.0  # [CLS] keeps its id in the baseline
