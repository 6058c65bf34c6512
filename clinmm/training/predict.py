"""Score a list of studies in eval mode: the batching loop that validation, the comparison and the head stack share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clinmm.data.dataset import Sample, collate
from clinmm.inference import autocast_for
from clinmm.models.classifier import ClinmmModel, ModelInputs

__all__ = ["predict_outputs", "to_device"]


def to_device(inputs: ModelInputs, device: torch.device) -> ModelInputs:
    """Move a collated batch to ``device`` (channels-last images on CUDA)."""
    inputs = inputs.to(device, non_blocking=True)
    if device.type == "cuda":
        fmt = torch.channels_last if inputs.image.dim() == 4 else torch.channels_last_3d
        inputs.image = inputs.image.contiguous(memory_format=fmt)
    return inputs


def predict_outputs(model: ClinmmModel, samples: list[Sample], *, fields: Sequence[str], image_size: int, pad_id: int,
                    device: torch.device, batch_size: int = 64, drop_image: bool = False,
                    drop_text: bool = False) -> dict[str, np.ndarray | None]:
    """Named (B, C) fields of :class:`~clinmm.models.classifier.ClinmmOutput`, concatenated to (N, C) float32
    arrays, in eval mode and under the device's autocast.

    Args:
        fields: output fields to keep, e.g. ``("logits",)`` or ``("head_logits", "image_logits", "text_logits")``.
        drop_image, drop_text: remove that modality from every study.

    Returns:
        {field: (N, C) array}; a field the model leaves ``None`` (an auxiliary head it does not have) is ``None``,
        and with no samples every field is an empty (0, C) array.
    """
    model.eval()
    parts: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    seen_none: set[str] = set()
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            inputs = to_device(collate(samples[start : start + batch_size], image_size=image_size,
                                       pad_id=pad_id).inputs, device)
            b = inputs.image_present.shape[0]
            with autocast_for(device):
                out = model(inputs, drop_image=torch.full((b,), drop_image, dtype=torch.bool, device=device),
                            drop_text=torch.full((b,), drop_text, dtype=torch.bool, device=device))
            for f in fields:
                value = getattr(out, f)
                if value is None:
                    seen_none.add(f)
                else:
                    parts[f].append(value.float().cpu().numpy())
    empty = np.zeros((0, len(model.labels)), dtype=np.float32)
    return {f: None if f in seen_none else (np.concatenate(parts[f]) if parts[f] else empty) for f in fields}
