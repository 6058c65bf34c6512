"""The eval-mode scoring loop shared by validation, the comparison and the head stack (``clinmm.training.predict``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.data.dataset import collate
from clinmm.models.classifier import ClinmmModel
from clinmm.models.text import TextEncoder
from clinmm.train import predict_logits
from clinmm.training.predict import predict_outputs


@pytest.fixture(scope="module")
def text_encoder(tiny_text_dir) -> TextEncoder:
    return TextEncoder.from_config(tiny_config(tiny_text_dir).text)


def _model(tiny_text_dir, text_encoder: TextEncoder, method: str) -> ClinmmModel:
    torch.manual_seed(0)
    return ClinmmModel(config=tiny_config(tiny_text_dir, method=method), labels=LABELS,
                       text_encoder=text_encoder if method != "image_only" else None)


def test_fields_match_a_single_forward_across_batches(tiny_text_dir, text_encoder):
    """Batches of 3 over 7 studies give the same (N, C) rows as one eval forward of all 7, with and without a
    modality dropped; the model is left in eval mode."""
    model = _model(tiny_text_dir, text_encoder, "cross_attention")
    samples = make_samples(text_encoder.note_tokenizer(), 7, seed=3)
    model.train()
    out = predict_outputs(model, samples, fields=("logits", "head_logits", "image_logits", "text_logits"),
                          image_size=32, pad_id=0, device=torch.device("cpu"), batch_size=3)
    assert not model.training
    with torch.no_grad():
        ref = model(collate(samples, image_size=32, pad_id=0).inputs)
    for name, value in out.items():
        assert value.shape == (7, len(LABELS)) and value.dtype == np.float32
        np.testing.assert_allclose(value, getattr(ref, name).numpy(), atol=1e-5)
    no_text = predict_logits(model, samples, image_size=32, pad_id=0, device=torch.device("cpu"), batch_size=3,
                             drop_text=True)
    with torch.no_grad():
        ref_no_text = model(collate(samples, image_size=32, pad_id=0).inputs,
                            drop_text=torch.ones(7, dtype=torch.bool)).logits
    np.testing.assert_allclose(no_text, ref_no_text.numpy(), atol=1e-5)


def test_missing_head_is_none_and_no_samples_is_empty(tiny_text_dir, text_encoder):
    """A head the model does not have comes back ``None``; an empty list of studies gives (0, C) arrays."""
    model = _model(tiny_text_dir, text_encoder, "image_only")
    samples = make_samples(text_encoder.note_tokenizer(), 4, seed=4)
    out = predict_outputs(model, samples, fields=("logits", "text_logits"), image_size=32, pad_id=0,
                          device=torch.device("cpu"))
    assert out["text_logits"] is None and out["logits"].shape == (4, len(LABELS))
    empty = predict_outputs(model, [], fields=("logits",), image_size=32, pad_id=0, device=torch.device("cpu"))
    assert empty["logits"].shape == (0, len(LABELS))
