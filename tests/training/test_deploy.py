"""int8 deployment path: linear layers quantised, outputs close to fp32, smaller; the measurement runs end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.calibration import fit_calibration
from clinmm.checkpoint import build_model, save_checkpoint
from clinmm.data.dataset import collate
from clinmm.deploy import measure_int8, quantize_int8, state_size_bytes

TINY = Path(__file__).parents[2] / "sample_data" / "tiny" / "manifest.csv"


def test_quantized_model_is_close_and_smaller(tiny_text_dir):
    torch.manual_seed(0)
    model = build_model(tiny_config(tiny_text_dir), LABELS).eval()
    q = quantize_int8(model)  # default scope: the text encoder
    assert not any(type(m) is torch.nn.Linear for m in q.text_encoder.modules())
    assert any("quantized" in type(m).__module__ for m in q.text_encoder.modules())
    assert type(q.image_proj[0]) is torch.nn.Linear  # projections / fusion / heads stay fp32
    q_all = quantize_int8(model, scope="all")
    assert not any(type(m) is torch.nn.Linear for m in q_all.modules())  # every plain Linear replaced
    with pytest.raises(ValueError, match="scope"):
        quantize_int8(model, scope="convs")
    batch = collate(make_samples(model.text_encoder.note_tokenizer(), 6, seed=2), image_size=32)
    with torch.no_grad():
        a, b = model(batch.inputs).logits, q(batch.inputs).logits
    assert torch.isfinite(b).all()
    assert (a - b).abs().max() < 0.1
    assert state_size_bytes(q) < state_size_bytes(model)
    assert type(next(model.text_encoder.model.encoder.layer[0].modules())) is type(
        next(model.text_encoder.model.encoder.layer[0].modules()))  # the original model is untouched
    assert any(type(m) is torch.nn.Linear for m in model.modules())


@pytest.mark.skipif(not TINY.is_file(), reason="sample_data/tiny is not in this checkout")
def test_measure_int8_reports(tmp_path, tiny_text_dir):
    cfg = tiny_config(tiny_text_dir)
    torch.manual_seed(0)
    model = build_model(cfg, LABELS).eval()
    ckpt = save_checkpoint(tmp_path / "ck", model=model, config=cfg, labels=LABELS,
                           calibration=fit_calibration(np.zeros((0, 5)), np.zeros((0, 5))), scope={},
                           model_card={}, reference={})
    report = measure_int8(ckpt, TINY, split="train", batch_size=8, max_studies=16, repeats=1)
    assert report.n_studies == 16
    assert report.size_int8_mb < report.size_fp32_mb
    assert report.ms_per_study_fp32 > 0 and report.ms_per_study_int8 > 0
    assert report.passed == (report.speedup >= 2 and report.auroc_drop <= 0.005)
