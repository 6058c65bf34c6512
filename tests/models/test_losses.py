"""Masked multi-label losses, pos_weight / focal, auxiliary unimodal heads, and data-parallel-exact normalisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clinmm.config import FusionConfig, TrainConfig
from clinmm.models.classifier import ClinmmOutput
from clinmm.models.losses import combine_terms, joint_loss, joint_loss_terms, masked_bce, masked_focal

NAN = float("nan")


def test_unknown_labels_are_ignored():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    known = torch.tensor([[2.0, 0.5, 3.0]]).flatten()
    y = torch.tensor([1.0, 0.0, 1.0])
    expected = F.binary_cross_entropy_with_logits(known, y)
    assert torch.allclose(masked_bce(logits, targets), expected)
    # the logit of the unknown cell has no influence and gets no gradient
    logits.requires_grad_(True)
    masked_bce(logits, targets).backward()
    assert logits.grad[0, 1] == 0


def test_all_unknown_is_zero_with_graph():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = masked_bce(logits, torch.full((3, 2), NAN))
    assert loss.item() == 0.0
    loss.backward()  # still differentiable
    assert torch.equal(logits.grad, torch.zeros(3, 2))


def test_pos_weight_scales_positive_cells():
    logits = torch.zeros(1, 2)
    targets = torch.tensor([[1.0, 0.0]])
    plain = masked_bce(logits, targets)
    weighted = masked_bce(logits, targets, pos_weight=torch.tensor([3.0, 3.0]))
    # positive cell: 3·log 2, negative cell: log 2 → mean 2·log 2
    assert math.isclose(plain.item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(weighted.item(), 2 * math.log(2), rel_tol=1e-6)


def test_focal_gamma0_is_bce_and_down_weights_easy_cells():
    logits = torch.tensor([[4.0, -0.2], [-3.0, 0.1]])
    targets = torch.tensor([[1.0, 1.0], [0.0, NAN]])
    assert torch.allclose(masked_focal(logits, targets, gamma=0.0), masked_bce(logits, targets))
    assert masked_focal(logits, targets, gamma=2.0) < masked_bce(logits, targets)
    easy = torch.tensor([[6.0]])
    assert masked_focal(easy, torch.ones(1, 1)) < 1e-3 * masked_bce(easy, torch.ones(1, 1))


def _output(b: int = 4, c: int = 3, seed: int = 0) -> ClinmmOutput:
    g = torch.Generator().manual_seed(seed)
    return ClinmmOutput(logits=torch.randn(b, c, generator=g), image_logits=torch.randn(b, c, generator=g),
                        text_logits=torch.randn(b, c, generator=g),
                        image_present=torch.tensor([True, False, True, True])[:b],
                        text_present=torch.tensor([True, True, False, True])[:b])


def test_joint_loss_weights_and_aux_masking():
    out = _output()
    y = torch.tensor([[1.0, 0.0, NAN], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fusion = FusionConfig(aux_image_weight=0.3, aux_text_weight=0.5)
    train = TrainConfig()
    expected = (masked_bce(out.logits, y) + 0.3 * masked_bce(out.image_logits, y, sample_mask=out.image_present)
                + 0.5 * masked_bce(out.text_logits, y, sample_mask=out.text_present))
    assert torch.allclose(joint_loss(out, y, fusion=fusion, train=train), expected)
    # the image head's logits of the study without an image do not matter
    out2 = _output()
    out2.image_logits[1] += 100.0
    assert torch.allclose(joint_loss(out2, y, fusion=fusion, train=train), expected)
    no_aux = FusionConfig(aux_image_weight=0.0, aux_text_weight=0.0)
    assert torch.allclose(joint_loss(out, y, fusion=no_aux, train=train), masked_bce(out.logits, y))
    focal = TrainConfig(loss="focal")
    assert torch.allclose(joint_loss(out, y, fusion=no_aux, train=focal), masked_focal(out.logits, y))


def test_split_batch_with_global_counts_equals_whole_batch():
    """What DDP relies on: Σ_ranks (sum_r / global count) · N / N equals the single-process mean."""
    out = _output()
    y = torch.tensor([[1.0, 0.0, NAN], [0.0, NAN, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fusion, train = FusionConfig(), TrainConfig()
    whole = joint_loss(out, y, fusion=fusion, train=train)
    halves = []
    for sl in (slice(0, 1), slice(1, 4)):  # unequal shares, different known counts
        part = ClinmmOutput(logits=out.logits[sl], image_logits=out.image_logits[sl], text_logits=out.text_logits[sl],
                            image_present=out.image_present[sl], text_present=out.text_present[sl])
        halves.append(joint_loss_terms(part, y[sl], fusion=fusion, train=train))
    counts = [halves[0][i].count + halves[1][i].count for i in range(len(halves[0]))]
    world = 2
    per_rank = [combine_terms(t, counts=counts, scale=world) for t in halves]
    assert torch.allclose(sum(per_rank) / world, whole, atol=1e-6)
    # and the naive average of per-rank means is NOT the same here (why the counts are reduced)
    naive = (joint_loss(ClinmmOutput(logits=out.logits[:1], image_logits=out.image_logits[:1],
                                     text_logits=out.text_logits[:1], image_present=out.image_present[:1],
                                     text_present=out.text_present[:1]), y[:1], fusion=fusion, train=train)
             + combine_terms(halves[1])) / 2
    assert not torch.allclose(naive, whole, atol=1e-4)
