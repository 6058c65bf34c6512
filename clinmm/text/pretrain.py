"""Domain-adaptive masked-language-model (MLM) pretraining of the text encoder on a notes corpus.

all-MiniLM-L6-v2 ships as a bare ``BertModel`` (sentence-embedding checkpoint) without the MLM head. We load it with
``AutoModelForMaskedLM`` from the encoder directory: the encoder weights are taken as they are, the prediction head's
decoder is tied to the word embeddings (``tie_word_embeddings``) and its transform layer / bias are freshly
initialised (transformers logs them as "missing" — expected). Training then continues MLM on the notes (15 % of
tokens, BERT's 80/10/10 replacement, ``DataCollatorForLanguageModeling``). Held-out MLM loss is measured before and
after on notes not used for training, with the masking fixed by a seed, so the two numbers compare.

The output directory holds ``config.json`` + ``model.safetensors`` (``BertForMaskedLM`` weights; ``AutoModel`` loads the
encoder part and drops the head) + tokenizer files + ``pretrain.json`` (metrics, settings): a valid
``TextEncoderConfig.path`` for ``clinmm train``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from clinmm.errors import ManifestError, TextModelError
from clinmm.models.text import resolve_text_model_path

__all__ = ["PretrainResult", "pretrain_mlm", "pretrain_from_csv", "read_notes_csv", "mlm_loss"]

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """What :func:`pretrain_mlm` did.

    Attributes:
        out: the written encoder directory.
        n_train: training notes; ``n_heldout``: held-out notes.
        n_train_sequences: token windows trained on (long notes give several).
        heldout_loss_before: held-out MLM loss (mean cross-entropy per masked token) of the starting weights.
        heldout_loss_after: the same after pretraining (same masks).
        steps: optimiser steps; ``seconds``: wall-clock time; ``device``: where it ran.
    """

    out: str
    n_train: int
    n_heldout: int
    n_train_sequences: int
    heldout_loss_before: float
    heldout_loss_after: float
    steps: int
    seconds: float
    device: str


def read_notes_csv(path: str | Path, *, columns: Sequence[str] = ("note_text",)) -> list[str]:
    """Read note texts from a CSV; several columns are joined with a newline; empty notes are skipped.

    Raises:
        ManifestError: the file lacks a requested column (named) or cannot be read.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{path}: missing column(s) {missing}; columns are {reader.fieldnames}")
            notes = ["\n".join(row[c] for c in columns if row[c] and row[c].strip()) for row in reader]
    except OSError as err:
        raise ManifestError(f"{path}: cannot read notes CSV: {err.strerror}") from err
    return [n for n in notes if n.strip()]


def _windows(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Every note as one or more windows of ≤ ``max_length`` tokens (long notes are not truncated away)."""
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, return_overflowing_tokens=True,
                    stride=0, return_special_tokens_mask=False)
    return [ids for ids in enc["input_ids"] if len(ids) > 2]


def _fixed_masks(collator, windows: list[list[int]], batch_size: int, seed: int) -> list[dict]:
    """Masked batches built once with a fixed seed (comparable held-out loss before/after)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return [collator([{"input_ids": w} for w in windows[i : i + batch_size]])
                for i in range(0, len(windows), batch_size)]
    finally:
        torch.random.set_rng_state(state)


def _masked_loss(model, b: dict, reduction: str = "mean") -> torch.Tensor:
    """MLM cross-entropy over the masked positions only.

    For BERT (``model.cls`` head) the vocabulary projection runs on the ~15 % masked positions instead of every
    position — the (tokens × vocabulary) logits dominate the cost of a small encoder like MiniLM. Other architectures
    take the standard ``model(**batch).loss`` path.
    """
    labels = b["labels"]  # (B, L), -100 where not masked
    if hasattr(model, "cls") and hasattr(model, "base_model"):
        hidden = model.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        sel = labels != -100  # (B, L)
        logits = model.cls(hidden[sel])  # (M, V)
        return torch.nn.functional.cross_entropy(logits, labels[sel], reduction=reduction)
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # (B, L, V)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                             reduction=reduction)


@torch.no_grad()
def mlm_loss(model, batches: list[dict], device: torch.device) -> float:
    """Mean cross-entropy per masked token over pre-masked batches."""
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        n = int((b["labels"] != -100).sum())
        if n:
            total += float(_masked_loss(model, b, reduction="sum"))
            count += n
    return total / max(count, 1)


def pretrain_mlm(
    notes: Sequence[str],
    out: str | Path,
    *,
    base_path: str | Path | None = None,
    heldout_notes: Sequence[str] | None = None,
    heldout_fraction: float = 0.1,
    max_length: int = 128,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 5e-5,
    mlm_probability: float = 0.15,
    max_steps: int = 0,
    max_seconds: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> PretrainResult:
    """Continue MLM pretraining of a local BERT-family encoder on ``notes`` and write a new encoder directory.

    Args:
        notes: training notes (free text).
        out: output directory (created; becomes a valid ``TextEncoderConfig.path``).
        base_path: starting encoder directory; ``None`` = the packaged all-MiniLM-L6-v2.
        heldout_notes: notes for the held-out MLM loss; ``None`` = a seeded ``heldout_fraction`` of ``notes``.
        heldout_fraction: share of ``notes`` held out when ``heldout_notes`` is not given.
        max_length: tokens per training window.
        epochs: passes over the training windows.
        batch_size: windows per step.
        lr: AdamW learning rate (linear decay, 6 % warm-up).
        mlm_probability: share of tokens masked.
        max_steps: stop after this many steps (0 = no limit).
        max_seconds: stop after this many seconds of training (0 = no limit).
        seed: seed for the held-out split, masking and shuffling.
        device: torch device.

    Raises:
        TextModelError: base directory invalid (see :func:`clinmm.models.text.resolve_text_model_path`).
        ValueError: no usable notes.
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    t0 = time.monotonic()
    device = torch.device(device)
    base = resolve_text_model_path(base_path)
    notes = [n for n in notes if n and n.strip()]
    if heldout_notes is None:
        order = list(range(len(notes)))
        random.Random(seed).shuffle(order)
        n_held = max(1, int(heldout_fraction * len(notes))) if len(notes) > 1 else 0
        heldout_notes = [notes[i] for i in order[:n_held]]
        notes = [notes[i] for i in order[n_held:]]
    heldout_notes = [n for n in heldout_notes if n and n.strip()]
    if not notes:
        raise ValueError("pretrain_mlm: no non-empty training notes")
    torch.manual_seed(seed)  # the new MLM head's initialisation is part of the run
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        model = AutoModelForMaskedLM.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError) as err:
        raise TextModelError(f"cannot load {base} as a masked-language model: {err}") from err
    model.to(device)
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability)
    train_windows = _windows(tokenizer, notes, max_length)
    held_batches = _fixed_masks(collator, _windows(tokenizer, heldout_notes, max_length), 64, seed + 1)
    before = mlm_loss(model, held_batches, device) if held_batches else float("nan")
    logger.info("MLM pretraining from %s: %d train windows, %d held-out notes; held-out loss before %.4f",
                base, len(train_windows), len(heldout_notes), before)

    torch.manual_seed(seed)
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(train_windows) / batch_size)
    total = steps_per_epoch * epochs if not max_steps else min(max_steps, steps_per_epoch * epochs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    step = 0
    done = False
    for _ in range(epochs):
        model.train()
        order = list(range(len(train_windows)))
        rng.shuffle(order)
        # sort inside pools of 50 batches by length: less padding (dynamic padding in the collator)
        pool = 50 * batch_size
        order = [i for s in range(0, len(order), pool)
                 for i in sorted(order[s : s + pool], key=lambda i: len(train_windows[i]))]
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(batches)
        for idx in batches:
            b = collator([{"input_ids": train_windows[i]} for i in idx])
            b = {k: v.to(device) for k, v in b.items()}
            loss = _masked_loss(model, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                logger.info("step %d/%d loss %.4f", step, total, loss.item())
            if (max_steps and step >= max_steps) or (max_seconds and time.monotonic() - t0 > max_seconds):
                done = True
                break
        if done:
            break
    after = mlm_loss(model, held_batches, device) if held_batches else float("nan")
    logger.info("held-out MLM loss %.4f → %.4f after %d steps", before, after, step)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    result = PretrainResult(out=str(out), n_train=len(notes), n_heldout=len(heldout_notes),
                            n_train_sequences=len(train_windows), heldout_loss_before=before,
                            heldout_loss_after=after, steps=step, seconds=round(time.monotonic() - t0, 1),
                            device=str(device))
    meta = {"result": asdict(result), "base": str(base), "max_length": max_length, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "mlm_probability": mlm_probability, "seed": seed}
    (out / "pretrain.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return result


def pretrain_from_csv(
    notes_csv: str | Path, out: str | Path, *, columns: Sequence[str] = ("note_text",), **kwargs
) -> PretrainResult:
    """:func:`read_notes_csv` then :func:`pretrain_mlm` (what ``clinmm pretrain-text`` runs).

    Args:
        notes_csv: CSV with the note column(s), e.g. a manifest or ``clinmm data indiana``'s ``manifest.csv``.
        out: output encoder directory.
        columns: text columns joined per row.
        **kwargs: passed to :func:`pretrain_mlm` (``base_path``, ``epochs``, ``max_length``, ``device`` ...).
    """
    return pretrain_mlm(read_notes_csv(notes_csv, columns=columns), out, **kwargs)
