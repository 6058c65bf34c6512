"""CLIP-style image–note contrastive pretraining (``clinmm pretrain-contrastive``) and retrieval evaluation.

Both encoders (plus their projections to the fusion width D) are trained on paired studies (image and note present)
with the symmetric InfoNCE loss of CLIP (Radford et al. 2021): in a batch of B pairs the matching note is the positive
for each image among the B notes, and vice versa, with a learned temperature. The output directory initialises a
classifier (``clinmm train --init-from DIR``; :func:`clinmm.train.load_init_weights`)::

    DIR/encoders.safetensors   image_encoder.*, image_proj.*, text_proj.* (+ text_encoder.* when it trained, with
                               LoRA adapters merged into the base weights so that any classifier can load them)
    DIR/contrastive_head.safetensors   the two embedding heads and the temperature (not needed downstream)
    DIR/config.json            the configuration used; DIR/metrics.json   loss per epoch, retrieval recall@K
    DIR/manifest.json          sha256 of every file (checked by ``--init-from``)

``--text-lora`` trains the text encoder through LoRA adapters (peft) instead of leaving it frozen; the trainable
parameter count is logged and written to metrics.json.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clinmm.checkpoint import build_model
from clinmm.config import ClinmmConfig, config_to_dict
from clinmm.data.dataset import Sample, collate
from clinmm.data.manifest import read_manifest
from clinmm.inference import autocast_for, resolve_device
from clinmm.models.classifier import ClinmmModel
from clinmm.models.fusion import masked_mean
from clinmm.train import prepare_samples, seed_everything

__all__ = [
    "ContrastiveHead",
    "ContrastiveResult",
    "embed_pairs",
    "info_nce",
    "pretrain_contrastive",
    "retrieval_recall",
]

logger = logging.getLogger(__name__)


class ContrastiveHead(nn.Module):
    """Embedding heads on the pooled image / text vectors and a learned temperature.

    Args:
        dim: fusion width D of the pooled vectors.
        embed_dim: width of the shared embedding space.
        init_temperature: initial softmax temperature (CLIP: 0.07).
    """

    def __init__(self, *, dim: int, embed_dim: int = 128, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.image = nn.Linear(dim, embed_dim)
        self.text = nn.Linear(dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, img_vec: torch.Tensor, txt_vec: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D) → (B, B) image-to-note similarity logits."""
        zi = F.normalize(self.image(img_vec), dim=-1)  # (B, E)
        zt = F.normalize(self.text(txt_vec), dim=-1)  # (B, E)
        return self.logit_scale.clamp(max=math.log(100.0)).exp() * zi @ zt.T  # (B, B)


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on (B, B) logits whose diagonal holds the positive pairs."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _pooled(model: ClinmmModel, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = batch.inputs.to(device)
    img, img_mask, _ = model.forward_image(inputs.image, inputs.image_present)
    txt, txt_mask, _ = model.forward_text(inputs)
    return masked_mean(img, img_mask), masked_mean(txt, txt_mask)  # (B, D) each


@torch.inference_mode()
def embed_pairs(model: ClinmmModel, head: ContrastiveHead, samples: list[Sample], *, image_size: int, pad_id: int,
                device: torch.device, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image and note embeddings (N, E) of paired samples, in eval mode."""
    model.eval()
    head.eval()
    zi, zt = [], []
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size], image_size=image_size, pad_id=pad_id)
        with autocast_for(device):
            iv, tv = _pooled(model, batch, device)
            zi.append(F.normalize(head.image(iv.float()), dim=-1).float().cpu().numpy())
            zt.append(F.normalize(head.text(tv.float()), dim=-1).float().cpu().numpy())
    return np.concatenate(zi), np.concatenate(zt)


def retrieval_recall(z_image: np.ndarray, z_text: np.ndarray, *, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Image→note retrieval: share of images whose own note ranks in the top k among all N notes."""
    sim = z_image @ z_text.T  # (N, N)
    own = np.diag(sim)[:, None]
    rank = (sim > own).sum(1)  # notes scoring strictly higher than the true one
    out = {f"recall@{k}": float(np.mean(rank < k)) for k in ks}
    out["chance@5"] = min(1.0, 5 / max(1, len(rank)))
    out["median_rank"] = float(np.median(rank) + 1)
    out["n"] = len(rank)
    return out


@dataclass
class ContrastiveResult:
    """What :func:`pretrain_contrastive` returns (``metrics.json`` holds the same)."""

    out: Path
    history: list[dict] = field(default_factory=list)
    recall_random: dict = field(default_factory=dict)
    recall_pretrained: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"out": str(self.out), "history": self.history, "recall_random_init": self.recall_random,
                "recall_pretrained": self.recall_pretrained, "parameters": self.parameters,
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()}}


def _paired(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.image is not None and s.note.num_chunks > 0]


def pretrain_contrastive(manifest_path: str | Path, out: str | Path, *, config: ClinmmConfig, epochs: int = 5,
                         text_lora: bool = False, embed_dim: int = 128, cache_text: bool = True,
                         max_train: int | None = None, progress: bool = True,
                         text_cache_file: str | Path | None = None) -> ContrastiveResult:
    """Pretrain image and text encoders contrastively on the ``train`` split's paired studies; write ``out``.

    Args:
        manifest_path: manifest with ``train`` (pretraining) and ``test`` (retrieval evaluation) splits; labels are
            not used.
        out: output directory (see module docstring).
        config: model configuration (image backbone, text encoder, fusion width, batch size, learning rates, seed).
        epochs: passes over the paired training studies.
        text_lora: train the text encoder through LoRA adapters (rank ``config.text.lora_r``).
        embed_dim: width of the shared embedding space.
        cache_text: with a fully frozen text encoder (and no LoRA), compute its features once.
        max_train: use only the paired studies among the first ``max_train`` training studies.
        progress: tqdm bar on stderr.
        text_cache_file: safetensors file to reuse / store the frozen text features
            (``clinmm.models.text_cache.FrozenTextCache``).
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    t0 = time.perf_counter()
    seconds: dict = {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(config)
    config.fusion.method = "cross_attention"
    config.text.lora = bool(text_lora)
    tc = config.train
    device = resolve_device(tc.device)
    gen = seed_everything(tc.seed)
    manifest = read_manifest(manifest_path, labels=config.data.labels or None)
    config.data.labels = manifest.labels
    model = build_model(config, manifest.labels)
    samples, _, pad_id = prepare_samples(manifest, model, config, splits=("train", "test"),
                                         limits={"train": max_train})
    train_pairs, test_pairs = _paired(samples["train"]), _paired(samples["test"])
    if len(train_pairs) < 2 or len(test_pairs) < 2:
        raise ValueError(f"{manifest_path}: contrastive pretraining needs paired studies (image + note); got "
                         f"{len(train_pairs)} train and {len(test_pairs)} test pairs")
    seconds["prepare"] = time.perf_counter() - t0
    live_text = model.text_encoder
    if cache_text and not text_lora and model.text_frozen():
        model.text_cache.max_bytes = None  # every paired note, every epoch
        from clinmm.models.text_cache import encoder_fingerprint

        tag = encoder_fingerprint(live_text) if text_cache_file else ""
        if text_cache_file:
            model.text_cache.load(text_cache_file, tag=tag)
        notes = [s.note for s in train_pairs + test_pairs]
        if model.text_cache.fill(live_text.to(device), notes, pad_id=pad_id) and text_cache_file:
            model.text_cache.save(text_cache_file, tag=tag)
    else:
        model.text_cache.enabled = False
    head = ContrastiveHead(dim=config.fusion.dim, embed_dim=embed_dim)
    model.to(device)
    head.to(device)
    size = config.data.image_size
    zi, zt = embed_pairs(model, head, test_pairs, image_size=size, pad_id=pad_id, device=device)
    recall_random = retrieval_recall(zi, zt)
    logger.info("retrieval before pretraining (random init): %s", recall_random)
    enc = model.encoder_parameters()
    enc_ids = {id(p) for p in enc}
    new = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad and id(p) not in enc_ids]
    groups = [{"params": new, "lr": tc.lr_head}] + ([{"params": enc, "lr": tc.lr_encoder}] if enc else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=tc.weight_decay)
    steps = epochs * (len(train_pairs) // tc.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups],
                                                    total_steps=max(1, steps), pct_start=0.1)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = {"trainable": trainable, "total": sum(p.numel() for p in model.parameters()),
              "text_trainable": sum(p.numel() for p in live_text.parameters() if p.requires_grad),
              "text_total": sum(p.numel() for p in live_text.parameters())}
    logger.info("contrastive pretraining: %d pairs, %d steps; parameters %s", len(train_pairs), steps, params)
    history = []
    from clinmm.train import make_augment

    augment = make_augment(tc.seed, flip_axes=tc.flip_axes)
    t_train = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        head.train()
        order = torch.randperm(len(train_pairs), generator=gen).tolist()
        losses = []
        bar = tqdm(total=len(order) // tc.batch_size, desc=f"contrastive {epoch}/{epochs}", disable=not progress,
                   leave=False, mininterval=1.0)
        for start in range(0, len(order) - tc.batch_size + 1, tc.batch_size):
            chunk = [train_pairs[i] for i in order[start : start + tc.batch_size]]
            chunk = [Sample(**{**s.__dict__, "image": augment(s.image)}) for s in chunk]
            batch = collate(chunk, image_size=size, pad_id=pad_id)
            with autocast_for(device):
                iv, tv = _pooled(model, batch, device)
                loss = info_nce(head(iv.float(), tv.float()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], tc.grad_clip or 1e9)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
        bar.close()
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "temperature": float(1.0 / head.logit_scale.detach().exp())})
        logger.info("contrastive epoch %d: loss %.4f", epoch, history[-1]["loss"])
    seconds["train"] = time.perf_counter() - t_train
    zi, zt = embed_pairs(model, head, test_pairs, image_size=size, pad_id=pad_id, device=device)
    recall = retrieval_recall(zi, zt)
    logger.info("retrieval after pretraining: %s", recall)

    if text_lora:  # merge adapters so that any (non-LoRA) classifier can load the text weights
        live_text.model = live_text.model.merge_and_unload()
    state = model.cpu().state_dict()
    keep = ("image_encoder.", "image_proj.", "text_proj.") + (("text_encoder.",) if text_lora else ())
    tensors = {k: v.detach().contiguous() for k, v in state.items() if k.startswith(keep)}
    save_file(tensors, str(out / "encoders.safetensors"), metadata={"format": "pt", "clinmm": "contrastive"})
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
              str(out / "contrastive_head.safetensors"))
    (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=2), encoding="utf-8")
    seconds["total"] = time.perf_counter() - t0
    result = ContrastiveResult(out=out, history=history, recall_random=recall_random, recall_pretrained=recall,
                               parameters=params, seconds=seconds)
    (out / "metrics.json").write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest_files = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    (out / "manifest.json").write_text(json.dumps({"files": manifest_files}, indent=2), encoding="utf-8")
    return result
