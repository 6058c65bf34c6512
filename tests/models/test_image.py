"""Image backbones: token shapes on the spatial grid for every backbone in 2D and 3D, checked pretrained weights."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from clinmm.config import ImageEncoderConfig
from clinmm.errors import CheckpointError, ChecksumError, ConfigError
from clinmm.models.image import BACKBONES, ImageEncoder

HEAVY = {"densenet121", "resnet50"}
CASES = [pytest.param(b, d, marks=pytest.mark.slow if b in HEAVY else ()) for b in BACKBONES for d in (2, 3)]


@pytest.mark.parametrize(("backbone", "dims"), CASES)
def test_tokens_shape_grid_and_finite(backbone, dims):
    torch.manual_seed(0)
    enc = ImageEncoder(config=ImageEncoderConfig(backbone=backbone, spatial_dims=dims), image_size=32).eval()
    x = torch.rand(2, 1, *(32,) * dims)
    with torch.no_grad():
        feats = enc.forward_features(x)
    assert feats.tokens.shape[0] == 2 and feats.tokens.shape[2] == enc.out_channels
    assert len(feats.grid) == dims
    assert feats.tokens.shape[1] == math.prod(feats.grid)
    assert torch.isfinite(feats.tokens).all()


def test_tokens_map_to_regions_row_major():
    """A change confined to one image corner changes the tokens of that corner's region first (row-major grid)."""
    torch.manual_seed(0)
    enc = ImageEncoder(config=ImageEncoderConfig(backbone="vit", spatial_dims=2), image_size=64).eval()
    x = torch.rand(1, 1, 64, 64)
    y = x.clone()
    y[..., 48:, :16] += 1.0  # bottom-left patch (row 3, col 0 of the 4×4 patch grid)
    with torch.no_grad():
        a, b = enc.forward_features(x), enc.forward_features(y)
    assert a.grid == (4, 4)
    # ViT tokens mix through attention, but the patch's own token changes most.
    change = (a.tokens - b.tokens).norm(dim=-1)[0]  # (16,)
    assert int(change.argmax()) == 3 * 4 + 0


def test_wrong_input_rank_is_named():
    enc = ImageEncoder(config=ImageEncoderConfig(backbone="resnet18", spatial_dims=3), image_size=32)
    with pytest.raises(ValueError, match="3D.*expects a 5-D input"):
        enc.forward_features(torch.rand(1, 1, 32, 32))


def test_vit_needs_multiple_of_patch():
    with pytest.raises(ConfigError, match="multiple of 16"):
        ImageEncoder(config=ImageEncoderConfig(backbone="vit"), image_size=40)


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="expected one of"):
        ImageEncoder(config=ImageEncoderConfig(backbone="alexnet"), image_size=32)


def _save_monai_state(net: torch.nn.Module, path, *, with_head: bool = True) -> str:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if with_head:  # a full MONAI state dict also carries the classification head, which must be ignored
        state["class_layers.out.weight"] = torch.zeros(1, 216)
    save_file(state, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrained_weights_load_and_are_checked(tmp_path):
    torch.manual_seed(1)
    src = ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small"), image_size=32)
    path = tmp_path / "pre.safetensors"
    digest = _save_monai_state(src.body.net, path)
    enc = ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small", pretrained_path=str(path),
                                                 pretrained_sha256=digest), image_size=32)
    for k, v in src.body.net.state_dict().items():
        assert torch.equal(v, enc.body.net.state_dict()[k]), k
    with pytest.raises(ChecksumError, match="does not match"):
        ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small", pretrained_path=str(path),
                                               pretrained_sha256="0" * 64), image_size=32)
    with pytest.raises(CheckpointError, match="do not fit backbone resnet18"):
        ImageEncoder(config=ImageEncoderConfig(backbone="resnet18", pretrained_path=str(path)), image_size=32)
    with pytest.raises(CheckpointError, match="not found"):
        ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small", pretrained_path=str(tmp_path / "no")),
                     image_size=32)


def test_pretrained_partial_or_wrong_shape_refused(tmp_path):
    from safetensors.torch import save_file

    src = ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small"), image_size=32)
    state = src.body.net.state_dict()
    partial = {k: v.contiguous() for k, v in list(state.items())[:5]}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="covers only 5"):
        ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small",
                                               pretrained_path=str(tmp_path / "partial.safetensors")), image_size=32)
    three_d = ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small", spatial_dims=3), image_size=32)
    save_file({k: v.contiguous() for k, v in three_d.body.net.state_dict().items()}, str(tmp_path / "3d.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small",
                                               pretrained_path=str(tmp_path / "3d.safetensors")), image_size=32)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ImageEncoder(config=ImageEncoderConfig(backbone="densenet_small",
                                               pretrained_path=str(tmp_path / "junk.safetensors")), image_size=32)
