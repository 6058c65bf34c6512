"""Faithfulness metrics on toy models whose true evidence is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clinmm.explain.attention import LabelExplanation, StudyExplanation, WordScore
from clinmm.explain.faithfulness import (
    curve_auc,
    image_deletion_insertion,
    negated_below_affirmed,
    pointing_game_image,
    pointing_game_text,
    text_deletion_insertion,
)


class _CellScorer:
    """Logit rises with the brightness of token cell (1, 1) of a 4×4 grid on 64 px."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 16:32, 16:32].mean(dim=(1, 2))  # (N,)
        return torch.stack([10 * (v - 0.7), torch.zeros_like(v)], dim=1)  # (N, 2)


def test_image_deletion_beats_random_when_attribution_is_right():
    image = torch.full((1, 1, 64, 64), 0.2)
    image[..., 16:32, 16:32] = 1.0
    right = np.zeros((4, 4))
    right[1, 1] = 1.0
    wrong = -right  # the evidence cell ranked last
    good = image_deletion_insertion(_CellScorer(), image, right, label_index=0, n_random=10)
    bad = image_deletion_insertion(_CellScorer(), image, wrong, label_index=0, n_random=10)
    assert len(good.random_deletion_auc) == 10
    assert good.deletion_below_random and good.insertion_above_random
    assert good.deletion_auc < bad.deletion_auc
    assert good.deletion[0] > 0.9 and good.deletion[1] < 0.2  # first step removes the evidence
    assert not bad.deletion_below_random  # last-removed evidence: above the random mean


class _OpacityScorer:
    """Logit rises with the mean brightness of the whole left half: a broad opacity that a blur does not remove."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, :, :32].mean(dim=(1, 2))  # (N,)
        return torch.stack([20 * (v - 0.45), torch.zeros_like(v)], dim=1)  # (N, 2)


def test_mean_fill_removes_a_broad_opacity_that_blur_keeps():
    """A blurred cell keeps a low-frequency opacity, so blur-filled deletion cannot tell a right order from a random
    one; the default mean fill removes it."""
    image = torch.full((1, 1, 64, 64), 0.2)
    image[..., :, :32] = 0.8  # opacity over the left half (8 of 16 cells)
    right = np.zeros((4, 4))
    right[:, :2] = 1.0
    blur = image_deletion_insertion(_OpacityScorer(), image, right, label_index=0, n_random=10, fill="blur")
    mean = image_deletion_insertion(_OpacityScorer(), image, right, label_index=0, n_random=10)
    assert mean.deletion_below_random
    assert mean.deletion_auc < blur.deletion_auc
    assert blur.deletion[-1] > 0.5  # everything "removed", the opacity still there
    with pytest.raises(ValueError, match="deletion fill"):
        image_deletion_insertion(_OpacityScorer(), image, right, label_index=0, fill="zeros")


class _LungOpacityScorer:
    """Logit rises with the brightest 16×16 cell of the left half (the "lung", dark when healthy): any cell brighter
    than 0.3 there saturates the probability, as a flat mid-grey fill does."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cells = F.avg_pool2d(x[:, :, :, :32], 16)  # (N, 1, 4, 2)
        v = cells.flatten(1).amax(1)  # (N,)
        return torch.stack([40 * (v - 0.3), torch.zeros_like(v)], dim=1)  # (N, 2)


def test_healthy_fill_removes_evidence_that_a_mean_fill_keeps():
    """A mean-filled lung cell (the image mean, raised by the bright right half) reads as an opacity, so the
    probability stays saturated whatever the order; healthy donors (dark lung) remove the lesion, and the curve is
    the mean over the donors."""
    image = torch.full((1, 1, 64, 64), 0.2)
    image[..., :, 32:] = 0.7  # bright mediastinum / soft tissue
    image[..., :16, :16] = 0.8  # lesion in the top-left cell of the 4×4 grid
    right = np.zeros((4, 4))
    right[0, 0] = 1.0
    mean = image_deletion_insertion(_LungOpacityScorer(), image, right, label_index=0, n_random=10)
    assert mean.deletion.min() > 0.99  # saturated: a right order beats random by a hair at most
    assert mean.random_deletion_auc.mean() - mean.deletion_auc < 1e-3
    healthy = torch.full((1, 1, 64, 64), 0.2)
    healthy[..., :, 32:] = 0.7
    good = image_deletion_insertion(_LungOpacityScorer(), image, right, label_index=0, n_random=10, fill="healthy",
                                    reference=healthy)
    assert good.deletion_below_random and good.deletion[-1] < 0.05
    assert good.random_deletion_auc.mean() - good.deletion_auc > 0.3
    opaque = healthy.clone()
    opaque[..., :, :32] = 0.5  # a donor whose lung reads as an opacity: the mean over two donors is halfway
    two = image_deletion_insertion(_LungOpacityScorer(), image, right, label_index=0, n_random=10, fill="healthy",
                                   reference=torch.cat([healthy, opaque]))
    assert two.deletion[-1] == pytest.approx((good.deletion[-1] + 1.0) / 2, abs=0.01)
    with pytest.raises(ValueError, match="needs donor images"):
        image_deletion_insertion(_LungOpacityScorer(), image, right, label_index=0, fill="healthy")
    with pytest.raises(ValueError, match="does not hold"):
        image_deletion_insertion(_LungOpacityScorer(), image, right, label_index=0, fill="healthy",
                                 reference=torch.zeros(1, 1, 32, 32))


class _WordScorer:
    """Logit = 6 × (token 1234 present and kept) − 3."""

    def __call__(self, ids, am, keep):
        present = ((ids == 1234) & (am > 0) & keep).flatten(1).any(1).float()  # (N,)
        return torch.stack([6 * present - 3, torch.zeros_like(present)], dim=1)


def test_text_deletion_removes_every_copy_of_a_word():
    # two overlapping windows; the evidence token (id 1234, chars 10-15) appears in both, kept in the second only
    ids = torch.tensor([[101, 7, 8, 1234, 102], [101, 1234, 9, 10, 102]])
    am = torch.ones_like(ids)
    keep = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    offsets = torch.tensor([[[0, 0], [0, 4], [5, 9], [10, 15], [0, 0]], [[0, 0], [10, 15], [16, 20], [21, 25], [0, 0]]])
    words = [(0, 4), (5, 9), (10, 15), (16, 20), (21, 25)]
    right = np.array([0.0, 0.1, 0.9, 0.0, 0.0])
    res = text_deletion_insertion(_WordScorer(), ids, am, keep, offsets, words, right, label_index=0,
                                  special={101, 102}, n_random=12)
    assert res.deletion[0] > 0.9 and res.deletion[1] < 0.1
    assert res.deletion_below_random and res.insertion_above_random


def test_curve_auc_trapezoid():
    assert curve_auc(np.array([0, 0.5, 1.0]), np.array([1.0, 1.0, 0.0])) == pytest.approx(0.75)


def test_pointing_game_dilation():
    mask = np.zeros((50, 40), dtype=bool)
    mask[10:14, 10:14] = True
    heat = np.zeros((50, 40))
    heat[10, 17] = 1.0  # 4 px right of the mask
    assert not pointing_game_image(heat, mask, radius=0)
    assert pointing_game_image(heat, mask, radius=4.5)
    with pytest.raises(ValueError, match="shape"):
        pointing_game_image(heat.T, mask)


def test_pointing_game_text():
    assert pointing_game_text([(0, 3), (20, 25)], [(22, 30)])
    assert not pointing_game_text([(0, 3)], [(3, 10)])


def _exp(words_by_label):
    return StudyExplanation(key="s", method="attention", image_present=False, text_present=True, labels=[
        LabelExplanation(label=name, prob=0.5, decision=False, threshold=0.5, modality_share=None, image=None,
                         words=words) for name, words in words_by_label.items()])


def test_negated_below_affirmed():
    # "No fever. Breathless on exertion."  fever negated (0-8), dyspnea affirmed (10-20)
    fever = [WordScore(0, 2, "No", 0.1, 0.2), WordScore(3, 8, "fever", 0.1, 0.3), WordScore(10, 20, "Breathless", 0,
                                                                                          0.0)]
    dysp = [WordScore(0, 2, "No", 0.0, 0.0), WordScore(3, 8, "fever", 0.0, 0.1), WordScore(10, 20, "Breathless", 0.5,
                                                                                         2.0)]
    mentions = [{"label": "fever", "start": 0, "end": 8, "polarity": "negated"},
                {"label": "dyspnea", "start": 10, "end": 20, "polarity": "affirmed"}]
    assert negated_below_affirmed(_exp({"fever": fever, "dyspnea": dysp}), mentions) is True
    assert negated_below_affirmed(_exp({"fever": dysp, "dyspnea": fever}), mentions) is False
    assert negated_below_affirmed(_exp({"fever": fever}), mentions[:1]) is None
