"""MONAI image backbones exposed as token encoders: ``forward_features`` → (B, Ni, C) tokens on a spatial grid.

Image tokens are the backbone's last spatial feature map flattened row-major (2D: ``h w``; 3D: ``d h w``), so the
attention a token receives maps back to an image region (see ``clinmm.explain``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from monai.networks import nets
from torch import nn

from clinmm.config import ImageEncoderConfig
from clinmm.errors import CheckpointError, ChecksumError, ConfigError

__all__ = ["ImageEncoder", "ImageFeatures", "BACKBONES"]

logger = logging.getLogger(__name__)

BACKBONES = ("densenet121", "densenet_small", "resnet18", "resnet50", "vit")


@dataclass
class ImageFeatures:
    """Output of :meth:`ImageEncoder.forward_features`.

    Args:
        tokens: (B, Ni, C) image tokens, row-major over ``grid``.
        grid: spatial size of the token grid: (h, w) in 2D, (d, h, w) in 3D.
    """

    tokens: torch.Tensor
    grid: tuple[int, ...]


class _ConvTrunk(nn.Module):
    """A MONAI CNN's convolutional trunk (no pooling head), ending with a ReLU."""

    def __init__(self, *, trunk: nn.Module, channels: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.trunk(x))


def _resnet_trunk(net: nn.Module) -> nn.Module:
    return nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


class ImageEncoder(nn.Module):
    """A MONAI backbone as an image-token encoder.

    Args:
        config: backbone name, spatial dims and optional local pretrained weights.
        image_size: side of the (square / cubic) model input; needed by the ViT's patch embedding.
        in_channels: input channels (1 for grayscale DICOM).
    """

    def __init__(self, *, config: ImageEncoderConfig, image_size: int, in_channels: int = 1) -> None:
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ConfigError(f"image.backbone: expected one of {list(BACKBONES)}, got {config.backbone!r}")
        if config.spatial_dims not in (2, 3):
            raise ConfigError(f"image.spatial_dims: expected 2 or 3, got {config.spatial_dims}")
        self.config = config
        self.spatial_dims = config.spatial_dims
        dims = config.spatial_dims
        self.is_vit = config.backbone == "vit"
        if config.backbone == "densenet121":
            net = nets.DenseNet121(spatial_dims=dims, in_channels=in_channels, out_channels=1)
            self.body: nn.Module = _ConvTrunk(trunk=net.features, channels=1024)
        elif config.backbone == "densenet_small":
            # Three dense blocks (stride 16): an 8×8 token grid at 128 px, light enough to train on 2 CPU cores.
            net = nets.DenseNet(spatial_dims=dims, in_channels=in_channels, out_channels=1, init_features=32,
                                growth_rate=16, block_config=(4, 8, 8), bn_size=4)
            self.body = _ConvTrunk(trunk=net.features, channels=216)
        elif config.backbone in ("resnet18", "resnet50"):
            net = getattr(nets, config.backbone)(spatial_dims=dims, n_input_channels=in_channels, num_classes=1)
            self.body = _ConvTrunk(trunk=_resnet_trunk(net), channels=512 if config.backbone == "resnet18" else 2048)
        else:
            patch = 16
            if image_size % patch:
                raise ConfigError(f"data.image_size: the ViT needs a multiple of {patch}, got {image_size}")
            self.body = nets.ViT(in_channels=in_channels, img_size=(image_size,) * dims, patch_size=(patch,) * dims,
                                 spatial_dims=dims, classification=False, hidden_size=384, mlp_dim=1536,
                                 num_layers=6, num_heads=6)
            self._vit_grid = (image_size // patch,) * dims
        self.out_channels = 384 if self.is_vit else self.body.out_channels
        if config.pretrained_path:
            self.load_pretrained(Path(config.pretrained_path), sha256=config.pretrained_sha256)

    def load_pretrained(self, path: Path, *, sha256: str | None = None) -> None:
        """Load backbone weights from a local safetensors file (checked against ``sha256`` when given)."""
        from safetensors.torch import load_file

        if not path.is_file():
            raise CheckpointError(f"{path}: pretrained image weights not found")
        if sha256:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != sha256:
                raise ChecksumError(f"{path}: sha256 {digest} does not match the expected {sha256}")
        state = load_file(str(path))
        missing, unexpected = self.body.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(list(self.body.state_dict())):
            raise CheckpointError(f"{path}: weights do not fit backbone {self.config.backbone} "
                                  f"({len(unexpected)} unexpected, {len(missing)} missing keys)")
        logger.info("loaded pretrained image weights from %s (%d keys missing)", path.name, len(missing))

    def forward_features(self, x: torch.Tensor) -> ImageFeatures:
        """Image → tokens.

        Args:
            x: (B, C_in, H, W) or (B, C_in, D, H, W) model input.

        Returns:
            :class:`ImageFeatures` with tokens (B, Ni, C) and the token grid.
        """
        if self.is_vit:
            tokens, _ = self.body(x)  # (B, Ni, C)
            return ImageFeatures(tokens=tokens, grid=self._vit_grid)
        fmap = self.body(x)  # (B, C, h, w) or (B, C, d, h, w)
        grid = tuple(fmap.shape[2:])
        if self.spatial_dims == 2:
            tokens = rearrange(fmap, "b c h w -> b (h w) c")
        else:
            tokens = rearrange(fmap, "b c d h w -> b (d h w) c")
        return ImageFeatures(tokens=tokens.contiguous(), grid=grid)

    def forward(self, x: torch.Tensor) -> ImageFeatures:
        return self.forward_features(x)
