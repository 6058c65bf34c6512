"""Tiny, fast building blocks for model and training tests: a random 2-layer BERT (MiniLM's tokenizer), a small
configuration and in-memory samples with missing modalities and unknown labels (no DICOM decoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clinmm.config import ClinmmConfig, DataConfig, FusionConfig, ImageEncoderConfig, TextEncoderConfig, TrainConfig
from clinmm.data.dataset import Sample

LABELS = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
_PHRASES = ["Presents with fever and chills.", "No shortness of breath.", "Progressive dyspnea on exertion.",
            "Heart sounds normal.", "Denies fever.", "Oxygen saturation 91% on room air.", "Routine review.",
            "Crackles at the bases.", "Lives alone, independent.", "Reduced air entry on the left."]


def make_tiny_bert(directory: Path) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32, no dropout) with MiniLM's tokenizer, saved to ``directory``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from clinmm.models.text import default_text_model_path

    if (directory / "config.json").is_file():
        return directory
    tok = AutoTokenizer.from_pretrained(default_text_model_path(), local_files_only=True)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tiny_config(text_dir: Path, *, method: str = "cross_attention", backbone: str = "densenet_small",
                spatial_dims: int = 2, image_size: int = 32, **train) -> ClinmmConfig:
    """Small everything; dropout off so that runs compare exactly."""
    return ClinmmConfig(
        data=DataConfig(labels=list(LABELS), image_size=image_size, modalities=["CR", "DX", "CT"]),
        image=ImageEncoderConfig(backbone=backbone, spatial_dims=spatial_dims),
        text=TextEncoderConfig(path=str(text_dir), max_length=16, stride=4, max_chunks=8),
        fusion=FusionConfig(method=method, dim=16, heads=2, dropout=0.0, modality_dropout=0.0),
        train=TrainConfig(**{"epochs": 2, "batch_size": 8, "lr_head": 3e-3, "lr_encoder": 1e-3, "patience": 0,
                             "warmup_frac": 0.1, "device": "cpu", **train}),
    )


def make_samples(tokenizer, n: int, *, seed: int = 0, image_size: int = 32, spatial_dims: int = 2,
                 missing: bool = True, long_note_every: int = 5) -> list[Sample]:
    """``n`` in-memory studies: random images with a bright blob when ``nodule`` is positive, notes built from
    phrases (``fever`` stated when positive), some long (several chunks), some without image or note, a few unknown
    labels."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = rng.integers(0, 2, size=len(LABELS)).astype(np.float32)
        y[4] = float(y[0] * y[2])
        if rng.random() < 0.1:
            y[rng.integers(0, len(LABELS))] = np.nan
        img = torch.from_numpy(rng.random((1,) + (image_size,) * spatial_dims).astype(np.float32) * 0.3)
        if y[0] == 1:
            img[(0,) + (slice(4, 12),) * spatial_dims] += 0.6
        words = list(rng.choice(_PHRASES, size=3))
        if y[2] == 1:
            words.insert(int(rng.integers(0, 3)), "Persistent fever noted.")
        if long_note_every and i % long_note_every == 0:
            words = words * 3
        text = " ".join(words)
        no_image = missing and i % 7 == 3
        no_note = missing and i % 6 == 2
        note = tokenizer.encode(None if no_note else text)
        out.append(Sample(key=f"S{i:04d}", image=None if no_image else img, letterbox=None, note=note,
                          note_text=None if no_note else text, labels=y,
                          image_status="missing" if no_image else "ok", meta={"Modality": "DX"}))
    return out
