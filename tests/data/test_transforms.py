"""Model-input preparation: fixed intensity mapping, letterbox geometry and its exact inverse orientation."""

from __future__ import annotations

import numpy as np
import pytest

from clinmm.config import DataConfig
from clinmm.data.transforms import Letterbox, intensity_map, prepare_image
from clinmm.io.study import ImageVolume


def _volume(rows: int, cols: int) -> ImageVolume:
    pixels = np.zeros((1, rows, cols), dtype=np.float32)
    pixels[0, : rows // 4, : cols // 5] = 100.0  # bright block top-left
    return ImageVolume(pixels=pixels, display=pixels / 100.0, modality="CR")


@pytest.mark.parametrize(("rows", "cols"), [(200, 320), (320, 200), (256, 256)])
def test_letterbox_keeps_orientation(rows: int, cols: int) -> None:
    prepared = prepare_image(_volume(rows, cols), config=DataConfig(image_size=64))
    assert prepared.tensor.shape == (1, 64, 64)
    box = prepared.letterbox
    # The bright block sits top-left of the *image* area (after padding offsets).
    img = prepared.tensor[0].numpy()
    ys, xs = np.nonzero(img > 0.5)
    assert ys.min() == box.pad_top and xs.min() == box.pad_left
    # Mapping the model input back lands on the original grid with the block still top-left.
    back = box.to_original(img)
    assert back.shape == (rows, cols)
    peak = np.unravel_index(np.argmax(back), back.shape)
    assert peak[0] < rows // 4 and peak[1] < cols // 5
    assert back[rows - 5, cols - 5] < 0.05  # bottom-right stays dark: not flipped or transposed


def test_letterbox_fit_is_symmetric() -> None:
    box = Letterbox.fit((100, 200), 64)
    assert box.resized == (32, 64) and box.pad_top == 16 and box.pad_left == 0


def test_intensity_mapping_is_fixed_by_config_not_header() -> None:
    x = np.linspace(-1000, 1000, 101, dtype=np.float32)
    win = intensity_map(x, config=DataConfig(intensity="window", window=[-500.0, 500.0]))
    assert win[0] == 0.0 and win[-1] == 1.0 and abs(win[50] - 0.5) < 1e-6
    pct = intensity_map(x, config=DataConfig(intensity="percentile"))
    assert pct.min() == 0.0 and pct.max() == 1.0
    flat = intensity_map(np.full(10, 7.0, dtype=np.float32), config=DataConfig())
    assert not flat.any()
