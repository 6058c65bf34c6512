"""Fixtures for the scoring tests: a small synthetic data set and an untrained checkpoint whose drift reference is
computed from that set's in-distribution sites (site_a, site_b; site_c is the generator's shifted site)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABELS = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Path of an external tool; skip with the reason when absent, fail when ``CI=true``."""
    path = shutil.which(name)
    if path is None:
        if _in_ci():
            pytest.fail(f"{name} is required in CI (Debian package) but not installed")
        pytest.skip(f"{name} not installed (Debian dicom3tools / dcmtk); CI=true makes this a failure")
    return path


def require_module(name: str, extra: str):
    """Import an optional dependency; skip with the reason when absent, fail when ``CI=true`` (CI installs extras)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if _in_ci():
            pytest.fail(f"{name} is required in CI but not installed (make test-slow installs clinmm[{extra}])")
        pytest.skip(f"{name} not installed (pip install 'clinmm[{extra}]'); CI=true makes this a failure")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """48 synthetic studies on 64-pixel images (CR/DX/CT, some without image or note)."""
    from clinmm.data.synthetic.generate import SyntheticOptions, generate_sample_data

    out = tmp_path_factory.mktemp("data") / "d"
    generate_sample_data(out, studies=48, seed=5, options=SyntheticOptions(image_size=64))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_data):
    """Untrained seeded model; reference stats from the train split's site_a/site_b studies and their scores."""
    import torch

    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import build_model, save_checkpoint
    from clinmm.config import demo_config
    from clinmm.data.dataset import SampleBuilder, collate
    from clinmm.data.manifest import read_manifest

    torch.manual_seed(0)
    cfg = demo_config()
    cfg.data.image_size = 64
    cfg.text.max_length = 32
    cfg.text.stride = 8
    cfg.text.max_chunks = 4
    model = build_model(cfg, LABELS).eval()
    manifest = read_manifest(tiny_data / "manifest.csv")
    builder = SampleBuilder(data_config=cfg.data, tokenizer=model.text_encoder.note_tokenizer())
    samples = []
    for r in manifest.records:
        if r.split != "train" or r.extra.get("site") == "site_c" or r.extra.get("modality") == "CT":
            continue
        samples.append(builder.build(r.image_path, r.note_text, key=r.study_id))
    with torch.inference_mode():
        logits = model(collate(samples, image_size=64).inputs).logits.numpy()
    probs = 1 / (1 + np.exp(-logits))
    stats = [s.image_stats for s in samples if s.image_stats]
    reference = {
        "intensity": {k: [float(st[k]) for st in stats] for k in ("mean", "std", "p05", "p95")},
        "scores": {lab: [float(v) for v in probs[:, c]] for c, lab in enumerate(LABELS)},
        "modalities_present": {"image": float(np.mean([s.image is not None for s in samples])),
                               "note": float(np.mean([s.note.num_chunks > 0 for s in samples]))},
    }
    scope = {"modalities": ["CR", "DX"],
             "views": sorted({str(s.meta["ViewPosition"]) for s in samples if s.meta.get("ViewPosition")}),
             "body_parts": sorted({str(s.meta["BodyPartExamined"]) for s in samples if s.meta.get("BodyPartExamined")})}
    out = tmp_path_factory.mktemp("ckpt") / "ckpt"
    save_checkpoint(out, model=model, config=cfg, labels=LABELS,
                    calibration=[LabelCalibration(threshold=0.5) for _ in LABELS], scope=scope,
                    model_card={"name": "clinmm-test-untrained"}, reference=reference)
    return out


@pytest.fixture(scope="session")
def salt_file(tmp_path_factory):
    return tmp_path_factory.mktemp("salt") / "salt"
