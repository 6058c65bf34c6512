"""One-modality-at-a-time forwards of a :class:`~clinmm.models.classifier.ClinmmModel` for one study.

Grad-CAM, integrated gradients and the deletion/insertion curves vary one modality many times while the other stays
fixed; these wrappers encode the fixed modality once and re-run only the varied branch + fusion.
"""

from __future__ import annotations

import torch
from torch import nn

from clinmm.models.classifier import ClinmmModel, ModelInputs

__all__ = ["ImageToLogits", "TextToLogits"]


class _FixedModality(nn.Module):
    """Holds the classifier and the study's fixed modality (projected tokens and mask, encoded once, no grad)."""

    def __init__(self, *, model: ClinmmModel, tokens: torch.Tensor, mask: torch.Tensor, present: torch.Tensor,
                 ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("fixed", tokens.detach().float(), persistent=False)  # (1, N, D)
        self.register_buffer("fixed_mask", mask.detach(), persistent=False)  # (1, N)
        self.register_buffer("fixed_present", present.detach(), persistent=False)  # (1,) the study's flag

    def fixed_for(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed tokens and mask for a batch of ``n`` variants (a study's single row is repeated)."""
        if self.fixed.shape[0] != 1:
            return self.fixed, self.fixed_mask
        return self.fixed.expand(n, -1, -1), self.fixed_mask.expand(n, -1)

    def present_for(self, n: int) -> torch.Tensor:
        """(n,) the fixed modality's presence flag."""
        return self.fixed_present.expand(n) if self.fixed_present.shape[0] == 1 else self.fixed_present


class ImageToLogits(_FixedModality):
    """``image (N, 1, H, W) → the model's output logits (N, C)`` with the study's note fixed.

    Args:
        model: the classifier (eval mode).
        inputs: the study as a batch of one (its note is encoded once here).
    """

    def __init__(self, *, model: ClinmmModel, inputs: ModelInputs) -> None:
        if model.image_encoder is None:
            raise ValueError("ImageToLogits: the model has no image branch (fusion.method=text_only)")
        inputs = inputs.to(next(model.parameters()).device)
        with torch.no_grad():
            txt, txt_mask, _ = model.forward_text(inputs)  # (1, Lt, D), (1, Lt)
        super().__init__(model=model, tokens=txt, mask=txt_mask, present=inputs.text_present)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        n = image.shape[0]
        present = torch.ones(n, dtype=torch.bool, device=image.device)
        img, img_mask, _ = self.model.forward_image(image, present)
        return self.model.fused_logits(img, img_mask, *self.fixed_for(n), image_present=present,
                                       text_present=self.present_for(n)).float()  # (N, C)


class TextToLogits(_FixedModality):
    """``note tokens (N, K, L) → the model's output logits (N, C)`` with the study's image fixed.

    Args:
        model: the classifier (eval mode).
        inputs: the study as a batch of one (its image is encoded once here).
    """

    def __init__(self, *, model: ClinmmModel, inputs: ModelInputs) -> None:
        if model.text_encoder is None:
            raise ValueError("TextToLogits: the model has no text branch (fusion.method=image_only)")
        inputs = inputs.to(next(model.parameters()).device)
        with torch.no_grad():
            img, img_mask, _ = model.forward_image(inputs.image, inputs.image_present)  # (1, Ni, D), (1, Ni)
        super().__init__(model=model, tokens=img, mask=img_mask, present=inputs.image_present)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[0]
        present = (attention_mask.bool() & keep.bool()).flatten(1).any(1)  # (N,)
        batch = ModelInputs(image=torch.zeros(n, 1, 1, 1, device=input_ids.device), image_present=present,
                            input_ids=input_ids, attention_mask=attention_mask, keep=keep, text_present=present)
        txt, txt_mask, _ = self.model.forward_text(batch)  # (N, K*L, D), (N, K*L)
        img, img_mask = self.fixed_for(n)
        return self.model.fused_logits(img, img_mask, txt, txt_mask, image_present=self.present_for(n),
                                       text_present=present).float()  # (N, C)
