"""Self-describing checkpoint directories: safetensors weights + JSON metadata + sha256 manifest, never pickle.

Layout::

    CKPT/model.safetensors   every tensor of the model (image + text encoders, fusion, heads)
    CKPT/config.json         the whole ClinmmConfig + labels + scope + preprocessing description
    CKPT/labels.json         label order, per-label calibration and decision thresholds (fitted on validation)
    CKPT/model_card.json     intended use, training data summary, metrics, limitations
    CKPT/reference.json      training reference statistics for drift checks (intensities, score histograms)
    CKPT/versions.json       clinmm / torch / monai / transformers / pydicom versions
    CKPT/text_encoder/       text encoder architecture + tokenizer files (weights live in model.safetensors)
    CKPT/manifest.json       sha256 of every file above, verified before anything is loaded
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from clinmm.calibration import LabelCalibration
from clinmm.config import ClinmmConfig, config_from_dict, config_to_dict
from clinmm.errors import CheckpointError, ChecksumError
from clinmm.models.classifier import ClinmmModel

__all__ = ["LoadedModel", "save_checkpoint", "load_checkpoint", "verify_checkpoint", "build_model",
           "preprocessing_record", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_MANIFEST = "manifest.json"


@dataclass
class LoadedModel:
    """A checkpoint in memory.

    Args:
        model: the network, in eval mode, on ``device``.
        config: its configuration.
        labels: label order.
        calibration: per-label calibration and thresholds.
        scope: what the model was trained on (``modalities``, ``views``, ``body_parts``).
        model_card: the model card.
        reference: drift reference statistics.
        sha256: sha256 of ``model.safetensors`` (identifies the model in outputs).
        preprocessing_hash: sha256 of the preprocessing record (intensity mapping, size, tokenizer, max length).
        path: the checkpoint directory.
        device: where the model lives.
    """

    model: ClinmmModel
    config: ClinmmConfig
    labels: list[str]
    calibration: list[LabelCalibration]
    scope: dict
    model_card: dict
    reference: dict
    sha256: str
    preprocessing_hash: str
    path: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def thresholds(self) -> list[float]:
        return [c.threshold for c in self.calibration]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict:
    out = {}
    for name in ("clinmm", "torch", "monai", "transformers", "pydicom", "safetensors"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def preprocessing_record(config: ClinmmConfig) -> dict:
    """What turns a DICOM + note into model input (hashed into every prediction row)."""
    d = config.data
    return {"intensity": d.intensity, "window": list(d.window), "image_size": d.image_size,
            "letterbox": "resize longer side, pad symmetrically with 0", "slice_rule": "middle slice for 2D models",
            "text_max_length": config.text.max_length, "text_stride": config.text.stride,
            "text_max_chunks": config.text.max_chunks, "format_version": FORMAT_VERSION}


def _preprocessing_hash(config: ClinmmConfig) -> str:
    return hashlib.sha256(json.dumps(preprocessing_record(config), sort_keys=True).encode()).hexdigest()


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def build_model(config: ClinmmConfig, labels: list[str], *, text_dir: Path | None = None,
                attn_implementation: str = "sdpa") -> ClinmmModel:
    """Construct a model: text encoder from ``text_dir`` (architecture only, weights to be loaded) or, when None,
    from ``config.text`` (pretrained weights from the local directory)."""
    from clinmm.models.text import TextEncoder

    text_encoder = None
    if config.fusion.method != "image_only":
        if text_dir is not None:
            text_encoder = TextEncoder.from_saved(text_dir, attn_implementation=attn_implementation)
        else:
            text_encoder = TextEncoder.from_config(config.text, attn_implementation=attn_implementation)
        if config.text.lora:
            from clinmm.models.lora import apply_text_lora

            apply_text_lora(text_encoder, r=config.text.lora_r)
    return ClinmmModel(config=config, labels=labels, text_encoder=text_encoder)


def save_checkpoint(directory: str | Path, *, model: ClinmmModel, config: ClinmmConfig, labels: list[str],
                    calibration: list[LabelCalibration], scope: dict, model_card: dict, reference: dict,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write a checkpoint directory atomically (built in a temp folder beside it, then renamed into place).

    Args:
        extra_files: further text files to include (name → content), e.g. the training log; covered by the manifest.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "clinmm_format": str(FORMAT_VERSION)})
    _write_json(tmp / "config.json", {"format_version": FORMAT_VERSION, "config": config_to_dict(config),
                                      "labels": labels, "scope": scope,
                                      "preprocessing": preprocessing_record(config)})
    _write_json(tmp / "labels.json", {"labels": labels, "calibration": [asdict(c) for c in calibration]})
    _write_json(tmp / "model_card.json", model_card)
    _write_json(tmp / "reference.json", reference)
    _write_json(tmp / "versions.json", _versions())
    if model.text_encoder is not None:
        model.text_encoder.save_pretrained_config(tmp / "text_encoder")
    for name, content in (extra_files or {}).items():
        (tmp / name).write_text(content, encoding="utf-8")
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    _write_json(tmp / _MANIFEST, {"files": {p.relative_to(tmp).as_posix(): _sha256(p) for p in files}})
    # A resumable training state (clinmm.training.state) lives in OUT/.train_state/ while training runs; it is kept
    # beside the checkpoint, outside the sha256 manifest (it is never loaded for inference).
    state_dir = directory / ".train_state"
    if state_dir.is_dir():
        os.replace(state_dir, tmp / ".train_state")
    if directory.exists():
        backup = directory.with_name(f".{directory.name}.old")
        if backup.exists():
            import shutil

            shutil.rmtree(backup)
        os.replace(directory, backup)
        os.replace(tmp, directory)
        import shutil

        shutil.rmtree(backup)
    else:
        os.replace(tmp, directory)
    logger.info("checkpoint written to %s", directory)
    return directory


def verify_checkpoint(directory: str | Path, *,
                      required: tuple[str, ...] = ("model.safetensors", "config.json", "labels.json"),
                      ) -> dict[str, str]:
    """Check every file against ``manifest.json`` (checkpoints and ``clinmm pretrain-contrastive`` outputs alike).

    Args:
        directory: the folder holding ``manifest.json``.
        required: files that must be listed (and so verified).

    Raises:
        CheckpointError: missing directory, manifest or file.
        ChecksumError: a file's sha256 differs from the recorded one (names the file).
    """
    directory = Path(directory)
    manifest = directory / _MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{directory}: not a clinmm checkpoint (no {_MANIFEST})")
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{manifest}: unreadable manifest: {err}") from err
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {_MANIFEST} but missing")
        got = _sha256(path)
        if got != expected:
            raise ChecksumError(f"{path}: sha256 {got} does not match {expected} recorded in {_MANIFEST}; "
                                "the file was modified or corrupted — refusing to load it")
    for name in required:
        if name not in files:
            raise CheckpointError(f"{directory}: {name} is not covered by {_MANIFEST}")
    return files


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from err


def load_checkpoint(directory: str | Path, *, device: str | torch.device = "cpu",
                    attn_implementation: str = "sdpa") -> LoadedModel:
    """Verify and load a checkpoint directory (safetensors only; no pickle anywhere)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    files = verify_checkpoint(directory)
    meta = _read_json(directory / "config.json")
    config = config_from_dict(meta.get("config", {}), source=str(directory / "config.json"))
    labels = list(meta["labels"])
    lab = _read_json(directory / "labels.json")
    calibration = [LabelCalibration(**c) for c in lab.get("calibration", [])] or [LabelCalibration()] * len(labels)
    text_dir = directory / "text_encoder" if (directory / "text_encoder").is_dir() else None
    model = build_model(config, labels, text_dir=text_dir, attn_implementation=attn_implementation)
    state = load_file(str(directory / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{directory / 'model.safetensors'}: weights do not match the configured model "
                              f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. "
                              f"{(list(missing) + list(unexpected))[:3]})")
    device = torch.device(device)
    model.text_cache.enabled = False  # inference sees each note once: caching would only hold memory
    model.to(device).eval()
    return LoadedModel(model=model, config=config, labels=labels, calibration=calibration,
                       scope=meta.get("scope", {}), model_card=_read_json(directory / "model_card.json"),
                       reference=_read_json(directory / "reference.json"), sha256=files["model.safetensors"],
                       preprocessing_hash=_preprocessing_hash(config), path=directory, device=device)
