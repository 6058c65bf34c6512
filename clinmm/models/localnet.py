"""A MONAI convolutional trunk whose tokens see only their own neighbourhood (bounded receptive field).

Why: in ``densenet_tiny`` every token sees most of the 128-px input (theoretical receptive field 335 px), so the token
next to a lesion can carry it as well as the token over it, and fusion's attention — which reads tokens without
positions — may settle on the neighbour (docs/explanations.md, fourteenth and fifteenth sessions). Here a token of
stride ``s`` sees a window of ``3 s`` pixels centred on its own cell, so the token that carries a lesion is the one
over it or its direct neighbour, whatever the training seed learns.

Layout (2D shown; 3D is the same with cubic kernels), stride 16 with ``stem_stride=4``:

======================  ====================  ===========  ==============
layer                   kernel / stride       grid (128)   receptive field
======================  ====================  ===========  ==============
stem (patchify)         4 / 4                 32           4
residual unit × 1       3 / 1 (two convs)     32           20
down                    2 / 2                 16           24
residual unit × 1       3 / 1 + 1 / 1         16           40
down                    2 / 2                 8            48
residual unit × 1       1 / 1 (two convs)     8            48
======================  ====================  ===========  ==============

Every kernel is either odd and "same"-padded or equal to its stride with no padding, so token ``m`` (per axis) is
centred on input pixel ``16 m + 7.5`` — the centre of its cell, where ``clinmm.explain`` draws it — and sees pixels
``16 m - 16 … 16 m + 31`` (``tests/models/test_image.py`` checks both from the gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

__all__ = ["LocalNet"]


class LocalNet(nn.Module):
    """Patchify stem, then residual units and non-overlapping downsamplings (BatchNorm + ReLU throughout).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        image_size: side of the model input; sets the token grid of the position embedding.
        channels: widths of the three stages (stride 4, 8, 16).
        positions: add a learned embedding of each token's grid position before the last (per-token) stage, so a
            token knows where it is without seeing farther: a bright blob means "nodule" in a lung and "electrode"
            on the chest wall. Resampled (bilinear / trilinear) when the input's grid differs.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, image_size: int,
                 channels: tuple[int, int, int] = (24, 48, 96), positions: bool = True) -> None:
        c1, c2, c3 = channels
        common = {"spatial_dims": spatial_dims, "act": "RELU", "norm": "BATCH"}
        super().__init__()
        self.add_module("stem", Convolution(in_channels=in_channels, out_channels=c1, strides=4, kernel_size=4,
                                            padding=0, **common))
        self.add_module("stage1", ResidualUnit(in_channels=c1, out_channels=c1, kernel_size=3, subunits=2, **common))
        self.add_module("down1", Convolution(in_channels=c1, out_channels=c2, strides=2, kernel_size=2, padding=0,
                                             **common))
        self.add_module("stage2", nn.Sequential(
            ResidualUnit(in_channels=c2, out_channels=c2, kernel_size=3, subunits=1, **common),
            ResidualUnit(in_channels=c2, out_channels=c2, kernel_size=1, subunits=1, **common)))
        self.add_module("down2", Convolution(in_channels=c2, out_channels=c3, strides=2, kernel_size=2, padding=0,
                                             **common))
        grid = (max(1, image_size // 16),) * spatial_dims
        self.position = nn.Parameter(torch.randn(1, c3, *grid) * 0.1) if positions else None  # (1, C, *grid)
        self.add_module("stage3", ResidualUnit(in_channels=c3, out_channels=c3, kernel_size=1, subunits=2, **common))
        self.out_channels = c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *spatial) → (B, C, *spatial / 16)."""
        x = self.down2(self.stage2(self.down1(self.stage1(self.stem(x)))))  # (B, C, *grid)
        if self.position is not None:
            pos = self.position
            if pos.shape[2:] != x.shape[2:]:
                mode = "bilinear" if x.dim() == 4 else "trilinear"
                pos = F.interpolate(pos, size=x.shape[2:], mode=mode, align_corners=False)
            x = x + pos
        return self.stage3(x)
