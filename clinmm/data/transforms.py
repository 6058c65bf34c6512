"""From a decoded :class:`~clinmm.io.study.ImageVolume` to the model's input tensor, and back.

The intensity mapping is fixed by the checkpoint (``DataConfig.intensity``), never the header's VOI window:

- ``percentile``: per image, modality values between the 0.5th and 99.5th percentiles → [0, 1] (clipped).
  Documented for CR/DX, whose raw values carry no physical unit and differ by vendor.
- ``window``: a fixed window in modality units (e.g. HU for CT) → [0, 1].

Geometry: the image is letterboxed — resized so its longer side equals ``image_size``, keeping the aspect ratio,
then padded symmetrically with zeros. :class:`Letterbox` records this so any map on the model grid (e.g. a heatmap)
goes back onto the original DICOM pixel grid, unflipped and untransposed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clinmm.config import DataConfig
from clinmm.io.study import ImageVolume

__all__ = ["Letterbox", "PreparedImage", "prepare_image", "intensity_map", "select_slice"]


@dataclass(frozen=True)
class Letterbox:
    """Resize-and-pad record for one 2D image.

    Args:
        orig_shape: (H0, W0) of the original DICOM pixel grid.
        size: side of the square model input.
        scale: model pixels per original pixel.
        resized: (h, w) after resizing, before padding.
        pad_top: rows of padding above the image.
        pad_left: columns of padding left of the image.
    """

    orig_shape: tuple[int, int]
    size: int
    scale: float
    resized: tuple[int, int]
    pad_top: int
    pad_left: int

    @classmethod
    def fit(cls, orig_shape: tuple[int, int], size: int) -> Letterbox:
        h0, w0 = orig_shape
        scale = size / max(h0, w0)
        h, w = max(1, round(h0 * scale)), max(1, round(w0 * scale))
        return cls(orig_shape=(h0, w0), size=size, scale=scale, resized=(h, w), pad_top=(size - h) // 2,
                   pad_left=(size - w) // 2)

    def to_original(self, heatmap: np.ndarray | torch.Tensor) -> np.ndarray:
        """Map a (h, w) map defined over the whole model input onto the original (H0, W0) grid.

        The map is first brought to the model input size (bilinear), the padding is cropped away, and the rest is
        resized to the original grid. Row 0 stays row 0, column 0 stays column 0.
        """
        t = torch.as_tensor(heatmap, dtype=torch.float32)[None, None]  # (1, 1, h, w)
        t = F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False)
        h, w = self.resized
        t = t[..., self.pad_top : self.pad_top + h, self.pad_left : self.pad_left + w]  # (1, 1, h, w)
        t = F.interpolate(t, size=self.orig_shape, mode="bilinear", align_corners=False)
        return t[0, 0].numpy()

    def to_dict(self) -> dict:
        return {"orig_shape": list(self.orig_shape), "size": self.size, "scale": self.scale,
                "resized": list(self.resized), "pad_top": self.pad_top, "pad_left": self.pad_left}


@dataclass
class PreparedImage:
    """Model input for one image.

    Args:
        tensor: (1, size, size) float32 for 2D.
        letterbox: geometry record to map maps back to the original grid.
        slice_index: which slice of the volume was used (2D models reading a series).
        stats: raw-intensity statistics (mean, std, p05, p95 of modality values) for drift checks.
    """

    tensor: torch.Tensor
    letterbox: Letterbox
    slice_index: int = 0
    stats: dict | None = None


def select_slice(volume: ImageVolume) -> int:
    """The slice a 2D model reads: the only one for 2D images, the middle one of a series."""
    return volume.pixels.shape[0] // 2


def intensity_map(pixels: np.ndarray, *, config: DataConfig) -> np.ndarray:
    """Modality values → [0, 1] with the checkpoint's fixed rule (see module docstring)."""
    x = pixels.astype(np.float32, copy=False)
    if config.intensity == "window":
        lo, hi = config.window
    else:
        lo, hi = np.percentile(x, [0.5, 99.5])
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def prepare_image(volume: ImageVolume, *, config: DataConfig) -> PreparedImage:
    """Decoded volume → (1, size, size) model input + letterbox geometry (2D models)."""
    index = select_slice(volume)
    raw = volume.pixels[index]  # (H0, W0) modality values, higher = brighter
    mapped = intensity_map(raw, config=config)
    box = Letterbox.fit(tuple(raw.shape), config.image_size)
    t = torch.from_numpy(np.ascontiguousarray(mapped))[None, None]  # (1, 1, H0, W0)
    t = F.interpolate(t, size=box.resized, mode="bilinear", align_corners=False, antialias=True)
    out = torch.zeros(1, box.size, box.size, dtype=torch.float32)
    h, w = box.resized
    out[:, box.pad_top : box.pad_top + h, box.pad_left : box.pad_left + w] = t[0]
    p05, p95 = np.percentile(raw, [5, 95])
    stats = {"mean": float(raw.mean()), "std": float(raw.std()), "p05": float(p05), "p95": float(p95)}
    return PreparedImage(tensor=out, letterbox=box, slice_index=index, stats=stats)
