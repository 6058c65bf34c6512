"""Training augmentation: flips happen only along ``train.flip_axes``, about half of the time, reproducibly."""

from __future__ import annotations

import torch

from clinmm.train import make_augment


def _bright_side(image: torch.Tensor) -> tuple[bool, bool]:
    """(bottom brighter than top, right brighter than left) of a (1, H, W) image."""
    h, w = image.shape[1:]
    return (bool(image[:, h // 2 :].mean() > image[:, : h // 2].mean()),
            bool(image[:, :, w // 2 :].mean() > image[:, :, : w // 2].mean()))


def test_flips_only_along_configured_axes():
    image = torch.zeros(1, 64, 64)
    image[:, :32, :32] = 0.8  # bright top-left quadrant
    keys = range(40)
    plain = [_bright_side(make_augment(0)(image, key=k)) for k in keys]
    assert not any(down or right for down, right in plain)  # no flip without flip_axes
    cols = [_bright_side(make_augment(0, flip_axes=(1,))(image, key=k)) for k in keys]
    assert not any(down for down, _ in cols)
    assert 8 <= sum(right for _, right in cols) <= 32  # about half, never rows
    both = make_augment(0, flip_axes=(0, 1))
    seen = {_bright_side(both(image, key=k)) for k in keys}
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
    again = make_augment(0, flip_axes=(0, 1))
    assert all(torch.equal(both(image, key=k), again(image, key=k)) for k in range(5))
