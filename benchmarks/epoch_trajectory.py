"""Test AUROC after every epoch, for training variants that share one warmed, frozen text encoder (a diagnostic).

`clinmm compare` keeps each model at its best *validation* epoch. On the synthetic set the test split's notes use
phrasings the training and validation splits never show, so validation cannot see how a note reader's
generalisation to new wording changes with training. This script trains each variant on the ``train`` split and
passes the ``test`` split where :func:`clinmm.train.fit` expects validation, so the per-epoch log *is* the test
AUROC. It is a diagnostic, not a selection rule: nothing it prints may choose a model.

The text encoder's weights come from a checkpoint written by ``clinmm compare`` (its ``cross_attention_ckpt``,
which holds the warmed encoder), so the warm-up is not re-run; its features are cached once for every variant.
A variant is ``METHOD[,section.key=value...]`` over the demo configuration, e.g.::

    .venv/bin/python benchmarks/epoch_trajectory.py --checkpoint runs/s3/seed7/cmp/cross_attention_ckpt \\
        --manifest runs/s3/seed7/data/manifest.csv text_only text_only,fusion.text_token_dropout=0.3 \\
        cross_attention,train.note_branch_epochs=3

Prints one JSON line per variant: the per-epoch history (train loss, test AUROC per label) and its wall time.
Figures go to docs/ablation.md by hand.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time

import torch

from clinmm.checkpoint import load_checkpoint
from clinmm.compare import build_model_with_text
from clinmm.config import ClinmmConfig, demo_config
from clinmm.data.manifest import read_manifest
from clinmm.models.text_cache import FrozenTextCache
from clinmm.train import fit, prepare_samples, seed_everything


def apply_variant(base: ClinmmConfig, variant: str) -> ClinmmConfig:
    """``METHOD[,section.key=value...]`` → a copy of ``base`` with that fusion method and those overrides."""
    cfg = copy.deepcopy(base)
    method, *overrides = variant.split(",")
    cfg.fusion.method = method
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        obj = getattr(cfg, section)
        setattr(obj, name, type(getattr(obj, name))(value))
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="clinmm compare's cross_attention_ckpt (warmed text encoder)")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    base = demo_config()
    manifest = read_manifest(args.manifest, labels=None)
    base.data.labels = manifest.labels
    encoder = load_checkpoint(args.checkpoint).model.text_encoder  # sha256-verified; the warmed encoder
    encoder.freeze_layers(len(encoder._layers()))
    samples, _, pad_id = prepare_samples(manifest, None, base, splits=("train", "test"),
                                         tokenizer=encoder.note_tokenizer())
    cache = FrozenTextCache(max_bytes=None)
    cache.fill(encoder, [s.note for split in ("train", "test") for s in samples[split]], pad_id=pad_id)
    for variant in args.variants:
        cfg = apply_variant(base, variant)
        seed_everything(cfg.train.seed)
        model = build_model_with_text(cfg, manifest.labels, encoder, text_cache=cache)
        start = time.perf_counter()
        result = fit(model, samples["train"], samples["test"], config=cfg, device=torch.device("cpu"), pad_id=pad_id,
                     progress=False)
        history = [{k.replace("val_", "test_"): (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                   for row in result.history]
        print(json.dumps({"variant": variant, "seconds": round(time.perf_counter() - start, 1), "history": history}))


if __name__ == "__main__":
    main()
