"""Resumable training state in ``OUT/.train_state/``: safetensors for tensors, JSON for everything else; no pickle.

Written atomically at the end of every epoch (temp folder + rename)::

    .train_state/model.safetensors       the model after the epoch
    .train_state/best.safetensors        the best weights so far (validation macro AUROC)
    .train_state/optimizer.safetensors   AdamW moments and steps (``state.<param index>.<name>``)
    .train_state/rng.safetensors         torch CPU (and CUDA) generator states
    .train_state/state.json              epoch, best epoch / AUROC, patience counter, history, scheduler state,
                                         optimizer hyper-parameters, Python and NumPy RNG states, config fingerprint

Data order, augmentation and modality dropout are seeded per (seed, epoch), so resuming at an epoch boundary
reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clinmm.errors import CheckpointError

__all__ = ["STATE_DIR", "TrainState", "config_fingerprint", "has_train_state", "load_train_state", "save_train_state"]

logger = logging.getLogger(__name__)

STATE_DIR = ".train_state"
_FORMAT = 1


@dataclass
class TrainState:
    """Everything needed to continue training after ``epoch``.

    Args:
        epoch: last completed epoch (1-based).
        model: model state dict after that epoch.
        best: best weights so far.
        best_epoch: epoch of ``best``.
        best_auroc: its validation macro AUROC.
        stale: epochs without improvement (early stopping counter).
        history: one dict per epoch.
        optimizer: ``optimizer.state_dict()``.
        scheduler: ``scheduler.state_dict()``.
        rng: Python / NumPy / torch RNG states.
        fingerprint: sha256 of the training-relevant configuration.
        train_seconds: training wall time so far.
    """

    epoch: int
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    best_epoch: int
    best_auroc: float
    stale: int
    history: list[dict]
    optimizer: dict
    scheduler: dict
    rng: dict = field(default_factory=dict)
    fingerprint: str = ""
    train_seconds: float = 0.0


def config_fingerprint(config_dict: dict, labels: list[str], extra: dict | None = None) -> str:
    """sha256 of what must not change between a run and its resumption (config minus ``epochs``/device, labels)."""
    d = json.loads(json.dumps(config_dict, default=str))
    d.get("train", {}).pop("epochs", None)
    d.get("train", {}).pop("device", None)
    d.get("train", {}).pop("max_train_seconds", None)
    d.get("data", {}).pop("num_workers", None)
    payload = {"config": d, "labels": labels, "extra": extra or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return meta, tensors


def _set_rng_state(meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    if "python" in meta:
        v, state, gauss = meta["python"]
        random.setstate((v, tuple(state), gauss))
    if "numpy" in meta:
        name, keys, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch_cpu" in tensors:
        torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def _split_optimizer(state_dict: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = json.loads(json.dumps(state_dict["param_groups"], default=lambda v: list(v) if isinstance(v, tuple)
                                   else str(v)))
    return {"param_groups": groups, "scalars": scalars}, tensors


def _join_optimizer(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = meta["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_train_state(out: str | Path, state: TrainState) -> Path:
    """Write ``out/.train_state`` atomically; returns its path."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / STATE_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".train_state.", dir=out))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.model.items()}, str(tmp / "model.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in state.best.items()}, str(tmp / "best.safetensors"))
        opt_meta, opt_tensors = _split_optimizer(state.optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_meta, rng_tensors = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        meta = {"format": _FORMAT, "epoch": state.epoch, "best_epoch": state.best_epoch,
                "best_auroc": state.best_auroc, "stale": state.stale, "history": state.history,
                "optimizer": opt_meta, "scheduler": state.scheduler, "rng": rng_meta,
                "fingerprint": state.fingerprint, "train_seconds": state.train_seconds}
        with (tmp / "state.json").open("w", encoding="utf-8") as f:
            json.dump(meta, f, default=float)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            old = out / f"{STATE_DIR}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def has_train_state(out: str | Path | None) -> bool:
    """True when ``out/.train_state`` holds a saved epoch (what ``--resume`` continues from)."""
    return out is not None and (Path(out) / STATE_DIR / "state.json").is_file()


def load_train_state(out: str | Path, *, fingerprint: str | None = None, restore_rng: bool = True,
                     ) -> TrainState | None:
    """Read ``out/.train_state``; None when there is none.

    Args:
        out: the training output directory.
        fingerprint: expected :func:`config_fingerprint`; a different one is an error (the config changed).
        restore_rng: also restore the Python / NumPy / torch RNG states.

    Raises:
        CheckpointError: the state is unreadable or belongs to a different configuration.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(out) / STATE_DIR
    if not (directory / "state.json").is_file():
        return None
    try:
        meta = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        model = load_file(str(directory / "model.safetensors"))
        best = load_file(str(directory / "best.safetensors"))
        opt_tensors = load_file(str(directory / "optimizer.safetensors"))
        rng_tensors = load_file(str(directory / "rng.safetensors"))
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"{directory}: unreadable training state: {err}") from err
    if meta.get("format") != _FORMAT:
        raise CheckpointError(f"{directory}/state.json: format {meta.get('format')!r}, expected {_FORMAT}")
    if fingerprint and meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{directory}: the training state was written with a different configuration or "
                              "label set; resume with the same config (only train.epochs / device may change) or "
                              "start a new output directory")
    if restore_rng:
        _set_rng_state(meta.get("rng", {}), rng_tensors)
    return TrainState(epoch=int(meta["epoch"]), model=model, best=best, best_epoch=int(meta["best_epoch"]),
                      best_auroc=float(meta["best_auroc"]), stale=int(meta["stale"]), history=meta["history"],
                      optimizer=_join_optimizer(meta["optimizer"], opt_tensors), scheduler=meta["scheduler"],
                      rng=meta.get("rng", {}), fingerprint=meta.get("fingerprint", ""),
                      train_seconds=float(meta.get("train_seconds", 0.0)))
