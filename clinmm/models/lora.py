"""LoRA fine-tuning of the text encoder with ``peft``: adapters on the attention projections, base weights frozen.

``apply_text_lora(encoder, r=...)`` wraps ``encoder.model`` in a ``peft`` model in place; the base weights stay
exactly as loaded (they are frozen, and only ``lora_A``/``lora_B`` matrices train). A clinmm checkpoint of such a
model stores base + adapter tensors together (``text.lora: true`` in its config rebuilds the same wrapping on load);
:func:`save_text_adapter` / :func:`load_text_adapter` also write and read the adapter alone
(``adapter_model.safetensors`` + ``adapter_config.json``, peft's format) to share it over an unchanged base model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from clinmm.errors import CheckpointError

__all__ = [
    "LORA_TARGETS",
    "ParameterCount",
    "apply_text_lora",
    "count_parameters",
    "load_text_adapter",
    "save_text_adapter",
]

logger = logging.getLogger(__name__)

# BERT-family attention projections (BERT, MiniLM, Bio_ClinicalBERT, PubMedBERT all name them so).
LORA_TARGETS = ("query", "value")


@dataclass
class ParameterCount:
    """Trainable and total parameters of a module."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / max(1, self.total)

    def __str__(self) -> str:
        return f"{self.trainable:,} trainable of {self.total:,} ({100 * self.fraction:.2f} %)"


def count_parameters(module: nn.Module) -> ParameterCount:
    params = list(module.parameters())
    return ParameterCount(trainable=sum(p.numel() for p in params if p.requires_grad),
                          total=sum(p.numel() for p in params))


def _lora_config(r: int):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, bias="none", target_modules=list(LORA_TARGETS))


def apply_text_lora(encoder: nn.Module, *, r: int = 8) -> ParameterCount:
    """Wrap ``encoder.model`` (a :class:`clinmm.models.text.TextEncoder`'s HF model) with LoRA adapters, in place.

    Args:
        encoder: the text encoder; its ``model`` attribute is replaced by the peft model.
        r: LoRA rank (alpha = 2r, no dropout).

    Returns:
        the trainable / total parameter count of the text encoder after wrapping.
    """
    from peft import get_peft_model

    if r < 1:
        raise ValueError(f"text.lora_r must be >= 1, got {r}")
    if getattr(encoder.model, "peft_config", None):
        raise ValueError("the text encoder already carries LoRA adapters")
    encoder.model = get_peft_model(encoder.model, _lora_config(r))
    count = count_parameters(encoder)
    logger.info("text encoder LoRA r=%d: %s", r, count)
    return count


def save_text_adapter(encoder: nn.Module, directory: str | Path) -> Path:
    """Write the LoRA adapter alone (``adapter_model.safetensors`` + ``adapter_config.json``) to ``directory``."""
    if not getattr(encoder.model, "peft_config", None):
        raise ValueError("the text encoder has no LoRA adapter to save (train with text.lora: true)")
    directory = Path(directory)
    encoder.model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def load_text_adapter(encoder: nn.Module, directory: str | Path) -> None:
    """Attach a saved LoRA adapter to an encoder holding the matching base weights (no LoRA yet), in place.

    Raises:
        CheckpointError: the directory has no adapter files.
    """
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise CheckpointError(f"{directory}: no adapter_config.json (write it with save_text_adapter)")
    if not (directory / "adapter_model.safetensors").is_file():
        raise CheckpointError(f"{directory}: no adapter_model.safetensors (clinmm reads safetensors adapters only)")
    encoder.model = PeftModel.from_pretrained(encoder.model, str(directory), is_trainable=False)
