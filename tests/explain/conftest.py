"""Fixtures for the explanation tests: a small untrained checkpoint (real MiniLM text encoder, tiny MONAI DenseNet)
and DICOM writers for orientation tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABELS = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained cross-attention checkpoint on 64-pixel inputs (weights random, seeded)."""
    import torch

    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import build_model, save_checkpoint
    from clinmm.config import demo_config

    torch.manual_seed(0)
    cfg = demo_config()
    cfg.data.image_size = 64
    cfg.text.max_length = 32
    cfg.text.stride = 8
    model = build_model(cfg, LABELS).eval()
    out = tmp_path_factory.mktemp("ckpt") / "ckpt"
    save_checkpoint(out, model=model, config=cfg, labels=LABELS, calibration=[LabelCalibration() for _ in LABELS],
                    scope={}, model_card={}, reference={})
    return out


@pytest.fixture(scope="session")
def tiny_predictor(tiny_checkpoint):
    from clinmm.inference import Predictor

    return Predictor.from_path(tiny_checkpoint, device="cpu", keep_display=True)
