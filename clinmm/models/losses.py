"""Multi-label losses with unknown labels masked out, and the joint fused + auxiliary-unimodal objective.

Every term is a *mean over known label cells* (NaN targets are unknown and ignored). For data-parallel training the
terms are also available as (sum, count) pairs (:func:`joint_loss_terms`) so that the trainer can divide by the
global count across ranks: then the gradient of N processes equals the gradient of one process on the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clinmm.config import FusionConfig, TrainConfig
from clinmm.models.classifier import ClinmmOutput

__all__ = ["LossTerm", "combine_terms", "joint_loss", "joint_loss_terms", "masked_bce", "masked_focal"]


def _known(targets: torch.Tensor, sample_mask: torch.Tensor | None) -> torch.Tensor:
    known = ~torch.isnan(targets)  # (B, C)
    if sample_mask is not None:
        known = known & sample_mask[:, None]
    return known


def _bce_cells(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(targets), pos_weight=pos_weight,
                                              reduction="none")  # (B, C)


def _focal_cells(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    t = torch.nan_to_num(targets)
    logits = logits.float()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")  # (B, C)
    p = torch.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    return ce * (1 - p_t) ** gamma  # (B, C)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, *, pos_weight: torch.Tensor | None = None,
               sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over known labels only.

    Args:
        logits: (B, C).
        targets: (B, C) with 1, 0 or NaN (unknown → ignored).
        pos_weight: optional (C,) weight of positives.
        sample_mask: optional (B,) bool; samples where it is False are ignored.
    """
    known = _known(targets, sample_mask)
    if not known.any():
        return logits.sum() * 0.0
    return _bce_cells(logits, targets, pos_weight)[known].mean()


def masked_focal(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 2.0,
                 sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) averaged over known labels; shapes as :func:`masked_bce` (gamma 0 = BCE)."""
    known = _known(targets, sample_mask)
    if not known.any():
        return logits.sum() * 0.0
    return _focal_cells(logits, targets, gamma)[known].mean()


@dataclass
class LossTerm:
    """One weighted term of the joint loss before normalisation.

    Args:
        name: ``fused``, ``image``, ``text`` or ``equivariance``.
        weight: its weight (1, α, β or ``train.rotation_equivariance``).
        total: sum of the per-cell losses over the known cells (0-dim tensor, differentiable).
        count: number of known cells (0-dim float tensor).
    """

    name: str
    weight: float
    total: torch.Tensor
    count: torch.Tensor


def joint_loss_terms(output: ClinmmOutput, targets: torch.Tensor, *, fusion: FusionConfig, train: TrainConfig,
                     pos_weight: torch.Tensor | None = None, gamma: float = 2.0) -> list[LossTerm]:
    """The terms of ``L_fused + α·L_image + β·L_text (+ λ·L_equivariance)`` as (sum, count) pairs; auxiliary terms
    only over samples where their modality was present (after modality dropout); the equivariance term (when the
    output carries it and ``train.rotation_equivariance`` > 0) over every sample with an image, as a mean of
    per-image errors."""

    def one(name: str, weight: float, logits: torch.Tensor, mask: torch.Tensor | None) -> LossTerm:
        known = _known(targets, mask)
        cells = _focal_cells(logits, targets, gamma) if train.loss == "focal" else _bce_cells(logits, targets,
                                                                                               pos_weight)
        total = (cells * known).sum()  # masked cells contribute exactly 0 (and no NaN: targets are nan_to_num'ed)
        return LossTerm(name=name, weight=weight, total=total, count=known.sum().to(cells.dtype))

    terms = [one("fused", 1.0, output.logits, None)]
    if output.image_logits is not None and fusion.aux_image_weight > 0:
        terms.append(one("image", fusion.aux_image_weight, output.image_logits, output.image_present))
    if output.text_logits is not None and fusion.aux_text_weight > 0:
        terms.append(one("text", fusion.aux_text_weight, output.text_logits, output.text_present))
    if output.image_equivariance is not None and train.rotation_equivariance > 0:
        err = output.image_equivariance  # (B,), NaN where the input has no image
        known = ~torch.isnan(err)
        terms.append(LossTerm(name="equivariance", weight=train.rotation_equivariance,
                              total=torch.where(known, err, torch.zeros_like(err)).sum(),
                              count=known.sum().to(err.dtype)))
    return terms


def combine_terms(terms: list[LossTerm], *, counts: list[torch.Tensor] | None = None, scale: float = 1.0,
                  ) -> torch.Tensor:
    """Σ weight · total / count (count = ``counts[i]`` when given, e.g. summed over data-parallel ranks) × scale."""
    loss = terms[0].total * 0.0
    for i, term in enumerate(terms):
        denom = (counts[i] if counts is not None else term.count).clamp_min(1.0)
        loss = loss + term.weight * term.total / denom
    return loss * scale


def joint_loss(output: ClinmmOutput, targets: torch.Tensor, *, fusion: FusionConfig, train: TrainConfig,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``L_fused + α·L_image + β·L_text``, each a mean over its known cells (see :func:`joint_loss_terms`)."""
    return combine_terms(joint_loss_terms(output, targets, fusion=fusion, train=train, pos_weight=pos_weight))
