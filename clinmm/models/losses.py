"""Multi-label losses with unknown labels masked out, and the joint fused + auxiliary-unimodal objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clinmm.config import FusionConfig, TrainConfig
from clinmm.models.classifier import ClinmmOutput

__all__ = ["masked_bce", "masked_focal", "joint_loss"]


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, *, pos_weight: torch.Tensor | None = None,
               sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over known labels only.

    Args:
        logits: (B, C).
        targets: (B, C) with 1, 0 or NaN (unknown → ignored).
        pos_weight: optional (C,) weight of positives.
        sample_mask: optional (B,) bool; samples where it is False are ignored.
    """
    known = ~torch.isnan(targets)  # (B, C)
    if sample_mask is not None:
        known = known & sample_mask[:, None]
    if not known.any():
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), pos_weight=pos_weight,
                                              reduction="none")  # (B, C)
    return loss[known].mean()


def masked_focal(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 2.0,
                 sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) averaged over known labels; shapes as :func:`masked_bce`."""
    known = ~torch.isnan(targets)
    if sample_mask is not None:
        known = known & sample_mask[:, None]
    if not known.any():
        return logits.sum() * 0.0
    t = torch.nan_to_num(targets)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    return (ce * (1 - p_t) ** gamma)[known].mean()


def joint_loss(output: ClinmmOutput, targets: torch.Tensor, *, fusion: FusionConfig, train: TrainConfig,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``L_fused + α·L_image + β·L_text``; each auxiliary term only over samples where its modality was present."""

    def one(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if train.loss == "focal":
            return masked_focal(logits, targets, sample_mask=mask)
        return masked_bce(logits, targets, pos_weight=pos_weight, sample_mask=mask)

    loss = one(output.logits)
    if output.image_logits is not None and fusion.aux_image_weight > 0:
        loss = loss + fusion.aux_image_weight * one(output.image_logits, output.image_present)
    if output.text_logits is not None and fusion.aux_text_weight > 0:
        loss = loss + fusion.aux_text_weight * one(output.text_logits, output.text_present)
    return loss
