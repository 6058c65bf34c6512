"""Text-only multi-label classifier over :class:`~clinmm.models.text.TextEncoder` (the "text branch" on its own).

Used to benchmark the text side on real reports (``benchmarks/indiana_text.py``), for the long-note acceptance test,
and as the quickest way to check a text encoder directory. The head mirrors the fusion model's text path: one learned
query per label attends over the note's units (kept tokens, or chunk vectors with ``mean``/``max`` pooling,
see :func:`clinmm.text.chunking.pool_chunks`); the attention weights are the per-label explanation and are
stitched back to character spans with :func:`clinmm.text.chunking.stitch_token_scores`.

A note with no text gets logits = the head's bias (the label prior), never NaN.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clinmm.models.text import TextEncoder
from clinmm.text.bucketing import LengthBucketBatchSampler
from clinmm.text.chunking import pool_chunks
from clinmm.text.tokenize import EncodedNote, collate_notes

__all__ = ["TextClassifier", "TextClassifierOutput", "FitResult", "fit_text_classifier", "predict_proba",
           "encode_notes", "cache_frozen_states"]

logger = logging.getLogger(__name__)


@dataclass
class TextClassifierOutput:
    """Attributes:
    logits: (B, C).
    attention: (B, C, U) label-query attention over text units (0 on masked units).
    unit_mask: (B, U) bool.
    """

    logits: torch.Tensor
    attention: torch.Tensor
    unit_mask: torch.Tensor


class TextClassifier(nn.Module):
    """Label-query attention head over a text encoder.

    Args:
        encoder: the text encoder (its ``config.pooling`` decides the units unless ``pooling`` is given).
        num_labels: C.
        pooling: override of ``encoder.config.pooling`` (``tokens``, ``mean``, ``max``).
        dim: key dimension of the label queries.
        dropout: dropout on the pooled vectors.
        shared_readout: add a readout vector shared by all labels to each label's own readout, so the logit of label
            ``c`` is ``(w_c + u) · ctx_c + b_c``. Every label's attended context trains ``u``; what the data teaches
            about one label's evidence (e.g. that a finding mentioned in a negated sentence is absent, common for
            "opacity" in chest reports) then also applies to labels whose finding the training data rarely negates.
            Off by default (the plain per-label readout).
    """

    def __init__(self, *, encoder: TextEncoder, num_labels: int, pooling: str | None = None, dim: int = 128,
                 dropout: float = 0.1, shared_readout: bool = False) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be ≥ 1, got {num_labels}")
        self.encoder = encoder
        self.num_labels = num_labels
        self.pooling = pooling or encoder.config.pooling
        H = encoder.hidden_size
        self.key = nn.Sequential(nn.LayerNorm(H), nn.Linear(H, dim))
        self.value_norm = nn.LayerNorm(H)
        self.queries = nn.Parameter(torch.randn(num_labels, dim) / math.sqrt(dim))
        self.dropout = nn.Dropout(dropout)
        self.weight = nn.Parameter(torch.zeros(num_labels, H))
        nn.init.normal_(self.weight, std=0.02)
        self.bias = nn.Parameter(torch.zeros(num_labels))
        # zeros: at initialisation the readout is the per-label one; u only moves where labels agree
        self.shared_weight = nn.Parameter(torch.zeros(H)) if shared_readout else None

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new layers (everything except the encoder)."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor, *,
                frozen: torch.Tensor | None = None) -> TextClassifierOutput:
        """Args: input_ids, attention_mask, keep: (B, K, L); frozen: optional (B, K, L, H) cached lower-layer states
        (:meth:`clinmm.models.text.TextEncoder.frozen_states`). Returns :class:`TextClassifierOutput`."""
        B, K, L = input_ids.shape
        feats = self.encoder(input_ids, attention_mask, keep, frozen=frozen)  # tokens (B, K*L, H)
        pooled = pool_chunks(feats.tokens, feats.mask, num_chunks=K, mode=self.pooling)  # type: ignore[arg-type]
        units, mask = pooled.units, pooled.mask  # (B, U, H), (B, U)
        keys = self.key(units)  # (B, U, D)
        scores = torch.einsum("cd,bud->bcu", self.queries, keys) / math.sqrt(keys.shape[-1])  # (B, C, U)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        has_text = mask.any(dim=1)  # (B,)
        attn = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # (B, C, U); all-masked rows → 0
        values = self.dropout(self.value_norm(units))  # (B, U, H)
        ctx = torch.einsum("bcu,buh->bch", attn, values)  # (B, C, H)
        weight = self.weight if self.shared_weight is None else self.weight + self.shared_weight  # (C, H)
        logits = (ctx * weight).sum(-1) * has_text.unsqueeze(-1).to(ctx.dtype) + self.bias  # (B, C)
        return TextClassifierOutput(logits=logits, attention=attn, unit_mask=mask)


def encode_notes(model: TextClassifier, texts: Sequence[str | None]) -> list[EncodedNote]:
    """Tokenize every note once with the encoder's :class:`~clinmm.text.tokenize.NoteTokenizer`."""
    nt = model.encoder.note_tokenizer()
    return [nt.encode(t) for t in texts]


def _lengths(notes: Sequence[EncodedNote]) -> list[int]:
    return [n.num_chunks * int(n.input_ids.shape[1]) if n.num_chunks else 0 for n in notes]


def _batch(notes: Sequence[EncodedNote], idx: Sequence[int], pad_id: int, device: torch.device):
    b = collate_notes([notes[i] for i in idx], pad_id=pad_id)
    return b["input_ids"].to(device), b["attention_mask"].to(device), b["keep"].to(device)


def _frozen_batch(cache: Sequence[torch.Tensor] | None, idx: Sequence[int], shape: torch.Size,
                  device: torch.device) -> torch.Tensor | None:
    if cache is None:
        return None
    B, K, L = shape
    H = cache[idx[0]].shape[-1]  # empty notes keep a (0, 0, H) entry, so H is always known
    out = torch.zeros(B, K, L, H)  # (B, K, L, H)
    for b, i in enumerate(idx):
        k, l_ = cache[i].shape[:2]
        out[b, :k, :l_] = cache[i].float()
    return out.to(device)


@torch.inference_mode()
def cache_frozen_states(model: TextClassifier, notes: Sequence[EncodedNote], *, batch_size: int = 64,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float16) -> list[torch.Tensor]:
    """Per note (K, L, H) states after the encoder's frozen layers (stored in ``dtype`` to halve memory).

    With ``freeze_layers = n`` the lower ``n`` layers never change during fine-tuning, so computing them once per note
    and training only the upper layers is exact up to the storage precision — the CPU speed path of the benchmark.
    """
    device = torch.device(device)
    model.to(device)
    pad_id = model.encoder.note_tokenizer().pad_id
    out: list[torch.Tensor] = [torch.zeros(0, 0, model.encoder.hidden_size, dtype=dtype)] * len(notes)
    for idx in LengthBucketBatchSampler(_lengths(notes), batch_size=batch_size, shuffle=False, pool_batches=0):
        ids, am, _ = _batch(notes, idx, pad_id, device)
        states = model.encoder.frozen_states(ids, am).cpu()  # (b, K, L, H)
        for b, i in enumerate(idx):
            k, l_ = notes[i].input_ids.shape
            out[i] = states[b, :k, :l_].to(dtype).clone()
    return out


@torch.inference_mode()
def predict_proba(model: TextClassifier, notes: Sequence[EncodedNote], *, batch_size: int = 64,
                  device: str | torch.device = "cpu", cache: Sequence[torch.Tensor] | None = None) -> np.ndarray:
    """Probabilities (N, C) for pre-encoded notes, in input order (batches are length-bucketed internally).

    ``cache``: optional :func:`cache_frozen_states` output for these notes.
    """
    device = torch.device(device)
    model.eval().to(device)
    pad_id = model.encoder.note_tokenizer().pad_id
    out = np.zeros((len(notes), model.num_labels), dtype=np.float32)
    for idx in LengthBucketBatchSampler(_lengths(notes), batch_size=batch_size, shuffle=False, pool_batches=0):
        ids, am, kp = _batch(notes, idx, pad_id, device)
        logits = model(ids, am, kp, frozen=_frozen_batch(cache, idx, ids.shape, device)).logits  # (b, C)
        out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
    return out


@dataclass
class FitResult:
    """Training summary: per-epoch history, best epoch (by validation macro AUROC), wall-clock seconds."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_auroc: float = float("nan")
    seconds: float = 0.0


def _macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    vals = []
    for c in range(y.shape[1]):
        ok = ~np.isnan(y[:, c])
        if ok.sum() and 0 < y[ok, c].sum() < ok.sum():
            vals.append(roc_auc_score(y[ok, c], p[ok, c]))
    return float(np.mean(vals)) if vals else float("nan")


def fit_text_classifier(
    model: TextClassifier,
    train_notes: Sequence[EncodedNote],
    y_train: np.ndarray,
    val_notes: Sequence[EncodedNote] | None = None,
    y_val: np.ndarray | None = None,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    lr_encoder: float = 5e-5,
    lr_head: float = 2e-3,
    weight_decay: float = 0.01,
    warmup_frac: float = 0.05,
    grad_clip: float = 1.0,
    pos_weight: bool = False,
    patience: int = 0,
    max_seconds: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    train_cache: Sequence[torch.Tensor] | None = None,
    val_cache: Sequence[torch.Tensor] | None = None,
) -> FitResult:
    """Fine-tune ``model`` with BCE (NaN labels masked), AdamW, warm-up + cosine, best-epoch restore on val AUROC.

    Args:
        model: the classifier (frozen encoder layers stay frozen).
        train_notes: pre-encoded training notes (:func:`encode_notes`).
        y_train: (N, C) float labels, NaN = unknown.
        val_notes: validation notes; with ``y_val`` the best epoch by macro AUROC is restored at the end.
        y_val: (Nv, C).
        epochs: passes over the training set.
        batch_size: notes per step (length-bucketed).
        lr_encoder: learning rate of the trainable encoder layers.
        lr_head: learning rate of the head.
        weight_decay: AdamW weight decay.
        warmup_frac: fraction of steps of linear warm-up.
        grad_clip: max gradient norm (0 disables).
        pos_weight: weight positives by the negative/positive ratio of the training labels.
        patience: stop after this many epochs without validation improvement (0 = never).
        max_seconds: wall-clock budget (0 = none); the epoch in progress ends early.
        seed: torch / sampler seed.
        device: torch device.
        train_cache: optional :func:`cache_frozen_states` of ``train_notes`` (then only upper layers run).
        val_cache: the same for ``val_notes``.
    """
    t0 = time.monotonic()
    device = torch.device(device)
    torch.manual_seed(seed)
    model.to(device)
    y_train = np.asarray(y_train, dtype=np.float32)
    pad_id = model.encoder.note_tokenizer().pad_id
    sampler = LengthBucketBatchSampler(_lengths(train_notes), batch_size=batch_size, seed=seed)
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": model.head_parameters(), "lr": lr_head}]
    if enc_params:
        groups.append({"params": enc_params, "lr": lr_encoder})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    total = max(1, epochs * len(sampler))
    warm = max(1, int(warmup_frac * total))
    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    pw = None
    if pos_weight:
        pos = np.nansum(y_train, 0)
        neg = np.sum(~np.isnan(y_train), 0) - pos
        pw = torch.tensor(np.clip(neg / np.maximum(pos, 1), 1.0, 50.0), dtype=torch.float32, device=device)
    result = FitResult()
    best_state = None
    stale = 0
    out_of_time = False
    for epoch in range(epochs):
        model.train()
        sampler.set_epoch(epoch)
        losses = []
        for idx in sampler:
            ids, am, kp = _batch(train_notes, idx, pad_id, device)
            y = torch.from_numpy(y_train[idx]).to(device)  # (b, C)
            known = ~torch.isnan(y)
            logits = model(ids, am, kp, frozen=_frozen_batch(train_cache, idx, ids.shape, device)).logits  # (b, C)
            loss_el = F.binary_cross_entropy_with_logits(logits, y.nan_to_num(0.0), pos_weight=pw, reduction="none")
            loss = (loss_el * known).sum() / known.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if max_seconds and time.monotonic() - t0 > max_seconds:
                out_of_time = True
                break
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "seconds": round(time.monotonic() - t0, 1)}
        if val_notes is not None and y_val is not None:
            p_val = predict_proba(model, val_notes, device=device, cache=val_cache)  # (Nv, C)
            row["val_macro_auroc"] = _macro_auroc(np.asarray(y_val, float), p_val)
            if not (row["val_macro_auroc"] <= result.best_val_auroc):  # first epoch or better (NaN-safe)
                result.best_val_auroc, result.best_epoch = row["val_macro_auroc"], epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                stale = 0
            else:
                stale += 1
        result.history.append(row)
        logger.info("epoch %d: %s", epoch, row)
        if out_of_time or (patience and stale >= patience):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.monotonic() - t0
    return result
