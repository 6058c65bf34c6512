"""One-modality-at-a-time forwards of a :class:`~clinmm.models.classifier.ClinmmModel` for one study.

Grad-CAM, integrated gradients and the deletion/insertion curves vary one modality many times while the other stays
fixed; these wrappers encode the fixed modality once and re-run only the varied branch + fusion.
"""

from __future__ import annotations

import torch
from torch import nn

from clinmm.models.classifier import ClinmmModel, ModelInputs

__all__ = ["ImageToLogits", "TextToLogits"]


def _expand(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 else t


class ImageToLogits(nn.Module):
    """``image (N, 1, H, W) → fused logits (N, C)`` with the study's note fixed.

    Args:
        model: the classifier (eval mode).
        inputs: the study as a batch of one (its note is encoded once here).
    """

    def __init__(self, *, model: ClinmmModel, inputs: ModelInputs) -> None:
        super().__init__()
        if model.image_encoder is None:
            raise ValueError("ImageToLogits: the model has no image branch (fusion.method=text_only)")
        self.model = model
        device = next(model.parameters()).device
        inputs = inputs.to(device)
        with torch.no_grad():
            if model.text_encoder is not None:
                txt, txt_mask, _ = model.forward_text(inputs)  # (1, Lt, D), (1, Lt)
                txt_mask = txt_mask & inputs.text_present[:, None]
            else:
                txt = torch.zeros(1, 1, model.config.fusion.dim, device=device)
                txt_mask = torch.zeros(1, 1, dtype=torch.bool, device=device)
        self.register_buffer("txt", txt.detach().float(), persistent=False)
        self.register_buffer("txt_mask", txt_mask.detach(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        n = image.shape[0]
        present = torch.ones(n, dtype=torch.bool, device=image.device)
        img, img_mask, _ = self.model.forward_image(image, present)  # (N, Ni, D), (N, Ni)
        fused = self.model.fusion(img, img_mask, _expand(self.txt, n), _expand(self.txt_mask, n))
        return fused.logits.float()  # (N, C)


class TextToLogits(nn.Module):
    """``note tokens (N, K, L) → fused logits (N, C)`` with the study's image fixed.

    Args:
        model: the classifier (eval mode).
        inputs: the study as a batch of one (its image is encoded once here).
    """

    def __init__(self, *, model: ClinmmModel, inputs: ModelInputs) -> None:
        super().__init__()
        if model.text_encoder is None:
            raise ValueError("TextToLogits: the model has no text branch (fusion.method=image_only)")
        self.model = model
        device = next(model.parameters()).device
        inputs = inputs.to(device)
        with torch.no_grad():
            if model.image_encoder is not None:
                img, img_mask, _ = model.forward_image(inputs.image, inputs.image_present)  # (1, Ni, D), (1, Ni)
            else:
                img = torch.zeros(1, 1, model.config.fusion.dim, device=device)
                img_mask = torch.zeros(1, 1, dtype=torch.bool, device=device)
        self.register_buffer("img", img.detach().float(), persistent=False)
        self.register_buffer("img_mask", img_mask.detach(), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[0]
        present = (attention_mask.bool() & keep.bool()).flatten(1).any(1)  # (N,)
        batch = ModelInputs(image=torch.zeros(n, 1, 1, 1, device=input_ids.device), image_present=present,
                            input_ids=input_ids, attention_mask=attention_mask, keep=keep, text_present=present)
        txt, txt_mask, _ = self.model.forward_text(batch)  # (N, K*L, D), (N, K*L)
        fused = self.model.fusion(_expand(self.img, n), _expand(self.img_mask, n), txt, txt_mask)
        return fused.logits.float()  # (N, C)
