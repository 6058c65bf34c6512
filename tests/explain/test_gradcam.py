"""Grad-CAM direction: our normaliser keeps the most important region the brightest; MONAI's default flips it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import default_normalizer
from torch import nn

from clinmm.explain.gradcam import HiResCAM, gradcam_maps, relative_normalizer


class _SpotNet(nn.Module):
    """Logit = mean of squared features of a 1×1 conv: evidence grows with local brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        with torch.no_grad():
            self.body.weight.zero_()
            self.body.weight[:, 0, 1, 1] = torch.tensor([1.0, 0.5, 0.8, 0.3])
            self.body.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.body(x))  # (B, 4, H, W)
        return (f**2).mean(dim=(2, 3))[:, :2]  # (B, 2) two "labels"


def _spot_image(h: int = 48, w: int = 64, cy: int = 10, cx: int = 20) -> torch.Tensor:
    x = torch.full((1, 1, h, w), 0.1)
    x[..., cy - 4 : cy + 4, cx - 4 : cx + 4] = 1.0
    return x


@pytest.mark.parametrize("cam_cls", [GradCAM, GradCAMpp, HiResCAM])
def test_relative_normalizer_keeps_direction(cam_cls):
    x = _spot_image()
    cam = cam_cls(nn_module=_SpotNet(), target_layers="body", postprocessing=relative_normalizer)
    m = cam(x=x, class_idx=0)[0, 0]  # (H, W)
    peak = np.unravel_index(int(m.argmax()), m.shape)
    assert 6 <= peak[0] < 14 and 16 <= peak[1] < 24, peak  # inside the bright spot: top-left, not flipped
    assert m[10, 20] > m[40, 60]
    assert float(m.min()) >= 0.0 and float(m.mean()) == pytest.approx(1.0, rel=1e-4)  # relative to uniform


def test_monai_default_normalizer_flips_the_map():
    """The reason for our own normaliser: MONAI's default maps the maximum to 0."""
    x = _spot_image()
    cam = GradCAM(nn_module=_SpotNet(), target_layers="body", postprocessing=default_normalizer)
    m = cam(x=x, class_idx=0)[0, 0]
    assert float(m[10, 20]) < float(m[40, 60])  # spot is darkest: flipped


def test_relative_normalizer_is_monotone_and_not_min_max():
    a = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    b = a * 10
    na, nb = relative_normalizer(a), relative_normalizer(b)
    assert torch.all(na.flatten().diff() > 0)
    assert torch.allclose(na, nb)  # a share: scale-free, but no min subtraction
    assert float(na.min()) == 0.0 and float(na.max()) == pytest.approx(2.0)  # 3 / mean 1.5, not 1.0
    assert torch.equal(relative_normalizer(torch.zeros(1, 1, 2, 2)), torch.zeros(1, 1, 2, 2))


class _GapNet(nn.Module):
    """A linear head on the global average of a feature map: the model Grad-CAM is exact for."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 6, kernel_size=3, padding=1), nn.ReLU())  # the target layer
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))  # (B, 2)


class _ReadOneSpotNet(nn.Module):
    """The same features everywhere, but the head reads them at one position only (a one-hot attention)."""

    def __init__(self, *, read: tuple[int, int]) -> None:
        super().__init__()
        self.read = read
        self.body = nn.Conv2d(1, 3, kernel_size=1)
        with torch.no_grad():
            self.body.weight.copy_(torch.tensor([1.0, 0.5, 2.0]).view(3, 1, 1, 1))
            self.body.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.body(x))  # (B, 3, H, W)
        y, x_ = self.read
        return f[:, :, y, x_].sum(1, keepdim=True).expand(-1, 2)  # (B, 2)


def test_hirescam_equals_gradcam_for_an_average_pooling_head():
    x = torch.rand(1, 1, 24, 32, generator=torch.Generator().manual_seed(1))
    net = _GapNet()

    def ident(m: torch.Tensor) -> torch.Tensor:  # compare the raw maps
        return m

    for c in (0, 1):
        g = GradCAM(nn_module=net, target_layers="body", postprocessing=ident)(x=x, class_idx=c)
        h = HiResCAM(nn_module=net, target_layers="body", postprocessing=ident)(x=x, class_idx=c)
        assert torch.allclose(g, h, atol=1e-6)
        assert float(h.abs().max()) > 0  # not trivially equal


def test_hirescam_stays_where_an_attention_head_reads_and_gradcam_does_not():
    """Two identical bright spots; the head reads only the top-left one. HiResCAM marks that spot alone; Grad-CAM,
    which averages the gradient over positions first, marks both equally (the reason HiResCAM is offered)."""
    x = torch.full((1, 1, 40, 40), 0.05)
    x[..., 8:12, 8:12] = 1.0  # read by the head
    x[..., 28:32, 28:32] = 1.0  # same content, not read
    net = _ReadOneSpotNet(read=(10, 10))
    h = HiResCAM(nn_module=net, target_layers="body", postprocessing=relative_normalizer)(x=x, class_idx=0)[0, 0]
    g = GradCAM(nn_module=net, target_layers="body", postprocessing=relative_normalizer)(x=x, class_idx=0)[0, 0]
    assert np.unravel_index(int(h.argmax()), h.shape) == (10, 10)
    assert float(h[30, 30]) == 0.0 and float(h[10, 10]) > 0
    assert float(g[30, 30]) == pytest.approx(float(g[10, 10]), rel=1e-5)  # Grad-CAM cannot tell the two apart


def test_gradcam_maps_on_clinmm_model(tiny_predictor):
    """On the real model class: one map per label over the model input, finite and ≥ 0."""
    rng = np.random.default_rng(0)
    from clinmm.io.study import ImageVolume

    pixels = rng.random((1, 80, 64)).astype(np.float32)
    vol = ImageVolume(pixels=pixels, display=pixels, spacing=(1.0, 1.0, 1.0), modality="CR")
    sample = tiny_predictor.prepare(vol, "Febrile overnight.")
    inputs = tiny_predictor.collate([sample]).inputs
    for method in ("gradcam", "gradcam++", "hirescam"):
        maps = gradcam_maps(tiny_predictor.loaded.model, inputs, label_indices=[0, 2], method=method)
        assert maps.shape == (2, 64, 64)
        assert torch.isfinite(maps).all() and (maps >= 0).all()
    with pytest.raises(ValueError, match="hirescam"):
        gradcam_maps(tiny_predictor.loaded.model, inputs, method="scorecam")
