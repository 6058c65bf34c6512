"""MONAI image backbones exposed as token encoders: ``forward_features`` → (B, Ni, C) tokens on a spatial grid.

Backbones (see :mod:`clinmm.models.registry`): ``densenet121``, ``densenet_small`` (CPU demo), ``resnet18``,
``resnet50``, ``vit``, each in 2D (radiographs, slices) or 3D (CT/MR volumes). Image tokens are the backbone's last
spatial feature map flattened row-major (2D: ``h w``; 3D: ``d h w``), so the attention a token receives maps back to
an image region (see ``clinmm.explain``): token ``i`` covers the input block ``unravel(i, grid)`` × ``stride``.

Pretrained weights: only from a local safetensors file holding the MONAI network's ``state_dict`` (clinmm never
downloads). The file is checked before use: sha256 against the configured value, every key must exist in the backbone
with the same shape (the removed classification head is ignored), and most of the backbone must be covered.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from clinmm.config import ImageEncoderConfig
from clinmm.errors import CheckpointError, ChecksumError, ConfigError
from clinmm.models.registry import get_backbone, list_backbones

__all__ = ["BACKBONES", "ImageEncoder", "ImageFeatures"]

logger = logging.getLogger(__name__)

BACKBONES = tuple(list_backbones())

# A pretrained file must cover at least this fraction of the backbone's tensors (guards against a wrong file whose
# few matching keys would load silently).
_MIN_COVERAGE = 0.9


@dataclass
class ImageFeatures:
    """Output of :meth:`ImageEncoder.forward_features`.

    Args:
        tokens: (B, Ni, C) image tokens, row-major over ``grid``.
        grid: spatial size of the token grid: (h, w) in 2D, (d, h, w) in 3D.
    """

    tokens: torch.Tensor
    grid: tuple[int, ...]


class _Trunk(nn.Module):
    """The MONAI net (head removed) run by its spec's ``features``: output = the map that becomes the tokens.

    ``ImageEncoder.body`` is this module, so hooks on it (Grad-CAM's target layer ``image_encoder.body``) see the
    final spatial feature map (B, C, *grid) of a CNN, or the (B, Ni, C) tokens of the ViT.
    """

    def __init__(self, *, net: nn.Module, spec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spec.features(self.net, x)


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
        self.spec = get_backbone(config.backbone)
        self.image_size = image_size
        self.is_vit = self.spec.is_vit
        try:
            net = self.spec.build(config.spatial_dims, in_channels, image_size)
        except ValueError as err:
            raise ConfigError(f"data.image_size / image.backbone: {err}") from err
        self.body = _Trunk(net=net, spec=self.spec)
        self.out_channels = self.spec.out_channels
        if config.pretrained_path:
            self.load_pretrained(Path(config.pretrained_path), sha256=config.pretrained_sha256)

    def load_pretrained(self, path: Path, *, sha256: str | None = None) -> None:
        """Load backbone weights from a local safetensors file holding the MONAI network's ``state_dict``.

        Args:
            path: the safetensors file.
            sha256: expected sha256 of the file (checked first when given).

        Raises:
            CheckpointError: the file is missing, unreadable, has keys or shapes the backbone does not have, or covers
                less than 90 % of the backbone's tensors.
            ChecksumError: the file's sha256 differs from ``sha256``.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise CheckpointError(f"{path}: pretrained image weights not found")
        if sha256:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != sha256.lower():
                raise ChecksumError(f"{path}: sha256 {digest} does not match the expected {sha256}")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from err
        state = {k: v for k, v in state.items() if not k.startswith(self.spec.head_prefixes or ("\0",))}
        own = self.body.net.state_dict()
        unexpected = sorted(k for k in state if k not in own)
        wrong = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
        if unexpected or wrong:
            detail = (f"unexpected keys e.g. {unexpected[:3]}" if unexpected else
                      f"shape mismatch for {wrong[0]}: file {tuple(state[wrong[0]].shape)}, backbone "
                      f"{tuple(own[wrong[0]].shape)}")
            raise CheckpointError(f"{path}: weights do not fit backbone {self.config.backbone} "
                                  f"({self.spatial_dims}D): {len(unexpected)} unexpected, {len(wrong)} wrong shape; "
                                  f"{detail}")
        coverage = len(state) / max(1, len(own))
        if coverage < _MIN_COVERAGE:
            raise CheckpointError(f"{path}: covers only {len(state)} of {len(own)} tensors of backbone "
                                  f"{self.config.backbone}; expected a full MONAI {self.config.backbone} state_dict")
        self.body.net.load_state_dict(state, strict=False)
        logger.info("loaded pretrained image weights from %s (%d of %d tensors)", path.name, len(state), len(own))

    def forward_features(self, x: torch.Tensor) -> ImageFeatures:
        """Image → tokens.

        Args:
            x: (B, C_in, H, W) or (B, C_in, D, H, W) model input.

        Returns:
            :class:`ImageFeatures` with tokens (B, Ni, C) and the token grid.
        """
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"ImageEncoder ({self.spatial_dims}D) expects a {self.spatial_dims + 2}-D input "
                             f"(B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W), got shape {tuple(x.shape)}")
        if self.spec.is_vit:
            tokens = self.body(x)  # (B, Ni, C)
            grid = tuple(s // self.spec.patch for s in x.shape[2:])
            return ImageFeatures(tokens=tokens, grid=grid)
        fmap = self.body(x)  # (B, C, h, w) or (B, C, d, h, w)
        grid = tuple(fmap.shape[2:])
        if self.spatial_dims == 2:
            tokens = rearrange(fmap, "b c h w -> b (h w) c")
        else:
            tokens = rearrange(fmap, "b c d h w -> b (d h w) c")
        return ImageFeatures(tokens=tokens.contiguous(), grid=grid)

    def forward(self, x: torch.Tensor) -> ImageFeatures:
        return self.forward_features(x)
