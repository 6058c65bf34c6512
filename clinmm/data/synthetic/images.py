"""Synthetic chest images: a radiograph-like 2D projection and a small axial CT slab, with faint lesions.

Everything here is pure numpy/scipy and driven by the ``numpy.random.Generator`` it is given, so the same generator
state gives the same pixels. Lesions are faint on purpose and share the image with label-independent distractors
(bright electrodes and side markers that defeat a brightest-pixel rule, small round nipple-like shadows and linear
scars that mimic lesions), so that a model has to learn shape, size and context rather than intensity.

Conventions: radiograph brightness is in [0, 1] with higher = brighter on display (more attenuation); CT values are
Hounsfield units. Masks are boolean arrays on the same (rows, cols) grid as the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = [
    "IMAGE_LABELS",
    "LesionParams",
    "RenderedImage",
    "render_radiograph",
    "render_ct",
]

IMAGE_LABELS: tuple[str, ...] = ("nodule", "consolidation")


@dataclass(frozen=True)
class LesionParams:
    """How hard the image findings are.

    Args:
        nodule_area: (min, max) nodule area as a fraction of the image (its mask is the disc of that area).
        consolidation_area: (min, max) consolidation area as a fraction of the image.
        nodule_contrast: (min, max) peak brightness added by a nodule (radiograph units, lungs ≈ 0.2–0.3).
        consolidation_contrast: (min, max) plateau brightness added by a consolidation.
        subtle_fraction: fraction of lesions drawn subtle (contrast × ``subtle_factor``, near the noise floor) so that
            even a perfect reader cannot saturate the AUROC.
        subtle_factor: contrast multiplier of a subtle lesion.
        ct_scale: multiplier from radiograph contrast to Hounsfield units for CT lesions.
    """

    nodule_area: tuple[float, float] = (0.02, 0.04)
    consolidation_area: tuple[float, float] = (0.04, 0.09)
    nodule_contrast: tuple[float, float] = (0.18, 0.3)
    consolidation_contrast: tuple[float, float] = (0.09, 0.16)
    subtle_fraction: float = 0.12
    subtle_factor: float = 0.3
    ct_scale: float = 3000.0

    def draw_contrast(self, rng: np.random.Generator, finding: str) -> float:
        """One lesion's contrast: uniform in the finding's range, times ``subtle_factor`` for a subtle lesion."""
        lo, hi = self.nodule_contrast if finding == "nodule" else self.consolidation_contrast
        amp = float(rng.uniform(lo, hi))
        return amp * self.subtle_factor if rng.random() < self.subtle_fraction else amp


@dataclass
class RenderedImage:
    """One rendered image or slab.

    Args:
        pixels: (S, H, W) float32; radiograph brightness in [0, 1] (S = 1) or CT Hounsfield units.
        masks: label → (H, W) bool lesion mask on the pixel grid (for CT: the in-plane footprint, the same on every
            slice, because the lesion spans the whole thin slab).
        contrast: label → the lesion contrast that was drawn (for difficulty analysis).
    """

    pixels: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    contrast: dict[str, float] = field(default_factory=dict)


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates: y in [0, 1] top→bottom, x in [0, 1] left→right, each (H, W)."""
    y = (np.arange(rows, dtype=np.float32) + 0.5) / rows
    x = (np.arange(cols, dtype=np.float32) + 0.5) / cols
    return np.broadcast_to(y[:, None], (rows, cols)), np.broadcast_to(x[None, :], (rows, cols))


def _ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float, edge: float) -> np.ndarray:
    """Soft ellipse in [0, 1]: 1 inside, 0 outside, a sigmoid edge of relative width ``edge``."""
    d = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
    return (1.0 / (1.0 + np.exp((d - 1.0) / edge))).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation, (H, W) float32."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return n / (n.std() + 1e-6)


def _pick_point(rng: np.random.Generator, region: np.ndarray) -> tuple[int, int]:
    """A random (row, col) inside a boolean region (falls back to the centre if the region is empty)."""
    idx = np.flatnonzero(region)
    if idx.size == 0:
        return region.shape[0] // 2, region.shape[1] // 2
    flat = int(idx[rng.integers(idx.size)])
    return flat // region.shape[1], flat % region.shape[1]


def _nodule(rng: np.random.Generator, lung: np.ndarray, params: LesionParams) -> tuple[np.ndarray, np.ndarray]:
    """A round dome-shaped blob: returns (profile (H, W) in [0, 1], mask (H, W) bool)."""
    rows, cols = lung.shape
    area = rng.uniform(*params.nodule_area) * rows * cols
    r = float(np.sqrt(area / np.pi))
    inner = ndimage.binary_erosion(lung, iterations=max(1, int(r * 0.6)))
    cy, cx = _pick_point(rng, inner if inner.any() else lung)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (r * r)
    mask = d2 <= 1.0
    profile = np.clip(1.0 - d2, 0.0, 1.0) ** 0.8
    return profile.astype(np.float32), mask


def _consolidation(rng: np.random.Generator, lung: np.ndarray, params: LesionParams) -> tuple[np.ndarray, np.ndarray]:
    """A larger irregular patch confined to a lung, with an air-bronchogram-like internal texture."""
    rows, cols = lung.shape
    target = rng.uniform(*params.consolidation_area) * rows * cols
    cy, cx = _pick_point(rng, lung)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    field_ = np.zeros((rows, cols), dtype=np.float32)
    base = np.sqrt(target / np.pi)
    for _ in range(int(rng.integers(3, 7))):
        oy, ox = rng.normal(0.0, base * 0.5, size=2)
        sy, sx = base * rng.uniform(0.45, 0.9, size=2)
        field_ += np.exp(-(((yy - cy - oy) / sy) ** 2 + ((xx - cx - ox) / sx) ** 2))
    field_ *= 1.0 + 0.25 * _smooth_noise(rng, (rows, cols), max(1.0, base / 6))
    field_ *= lung
    # Threshold so that the patch covers the target area (as far as the lung allows).
    flat = np.sort(field_.ravel())[::-1]
    k = int(min(target, np.count_nonzero(flat > 1e-3) - 1))
    thr = float(flat[max(k, 1)])
    mask = field_ > max(thr, 1e-3)
    soft = ndimage.gaussian_filter(mask.astype(np.float32), max(1.0, base / 10))
    texture = 0.75 + 0.25 * np.tanh(_smooth_noise(rng, (rows, cols), 1.5))
    return np.clip(soft * texture, 0.0, 1.0).astype(np.float32), mask


def _disc(rows: int, cols: int, cy: float, cx: float, r: float, soft: float = 0.7) -> np.ndarray:
    """A soft-edged disc (H, W) in [0, 1]."""
    yy, xx = np.ogrid[0:rows, 0:cols]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / soft + 0.5, 0.0, 1.0).astype(np.float32)


def render_radiograph(
    rng: np.random.Generator,
    *,
    rows: int,
    cols: int,
    nodule: bool,
    consolidation: bool,
    params: LesionParams = LesionParams(),
) -> RenderedImage:
    """Render a frontal chest radiograph-like image.

    Args:
        rng: random generator (consumed; same state → same image).
        rows: image height in pixels.
        cols: image width in pixels.
        nodule: draw a nodule (round faint blob) in a lung.
        consolidation: draw a consolidation (larger faint irregular patch) in a lung.
        params: lesion size and contrast ranges.

    Returns:
        :class:`RenderedImage` with pixels (1, H, W) brightness in [0, 1] and masks for the drawn lesions.
    """
    y, x = _grid(rows, cols)
    scale = min(rows, cols)
    # Patient variation: position, lung size, body width.
    dy, dx = rng.normal(0.0, 0.02, size=2)
    lung_h, lung_w = rng.uniform(0.27, 0.33), rng.uniform(0.12, 0.15)
    body = _ellipse(y, x, 0.58 + dy, 0.5 + dx, 0.62, rng.uniform(0.44, 0.5), 0.03)
    # Lungs narrow towards the apices and widen towards the bases.
    taper = np.clip(0.65 + 0.55 * (y - (0.45 + dy - lung_h)) / (2 * lung_h), 0.65, 1.2)
    right = _ellipse(y, x, 0.45 + dy, 0.3 + dx, lung_h, lung_w * taper, 0.06)
    left = _ellipse(y, x, 0.46 + dy, 0.7 + dx, lung_h * 0.95, lung_w * 0.95 * taper, 0.06)
    heart = _ellipse(y, x, 0.63 + dy, 0.56 + dx, 0.14, rng.uniform(0.14, 0.19), 0.1)
    lungs = np.clip(right + left, 0.0, 1.0)
    img = 0.03 + 0.55 * body - 0.33 * lungs + 0.16 * heart * body
    img += 0.1 * _ellipse(y, x, 0.55 + dy, 0.5 + dx, 0.6, 0.035, 0.2) * body  # spine
    img += 0.12 * np.clip((y - (0.78 + dy)) / 0.05, 0.0, 1.0) * body  # diaphragm / abdomen
    # Ribs: curved periodic bands, strongest over the lungs.
    n_ribs = rng.uniform(8.5, 10.5)
    phase = (y + 0.35 * (x - 0.5 - dx) ** 2) * n_ribs * 2 * np.pi + rng.uniform(0, 2 * np.pi)
    ribs = np.clip(np.sin(phase) - 0.3, 0.0, None) / 0.7
    img += 0.05 * ribs * (0.35 + 0.65 * lungs) * body
    # Vessels and low-frequency anatomy texture.
    img += 0.025 * _smooth_noise(rng, (rows, cols), scale / 120) * lungs
    img += 0.02 * _smooth_noise(rng, (rows, cols), scale / 25) * body
    lung_core = lungs > 0.85
    masks: dict[str, np.ndarray] = {}
    contrast: dict[str, float] = {}
    if nodule:
        profile, mask = _nodule(rng, lung_core, params)
        amp = params.draw_contrast(rng, "nodule")
        img += amp * profile
        masks["nodule"], contrast["nodule"] = mask, amp
    if consolidation:
        profile, mask = _consolidation(rng, lung_core, params)
        amp = params.draw_contrast(rng, "consolidation")
        img += amp * profile
        masks["consolidation"], contrast["consolidation"] = mask, amp
    # Distractors, independent of the labels.
    for _ in range(int(rng.integers(0, 3))):  # nipple shadows / end-on vessels: small faint round blobs
        cy, cx = _pick_point(rng, lung_core)
        r = rng.uniform(0.02, 0.035) * scale
        img += rng.uniform(0.02, 0.07) * ndimage.gaussian_filter(_disc(rows, cols, cy, cx, r), r / 3)
    for _ in range(int(rng.integers(0, 2))):  # plate-like scar: elongated faint line
        cy, cx = _pick_point(rng, lung_core)
        ang = rng.uniform(-0.4, 0.4)
        yy, xx = np.ogrid[0:rows, 0:cols]
        along = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        across = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        line = np.exp(-(along / (0.08 * scale)) ** 2 - (across / (0.006 * scale + 0.5)) ** 2)
        img += rng.uniform(0.03, 0.08) * line.astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):  # ECG electrodes: small, very bright discs anywhere on the body
        cy, cx = _pick_point(rng, body > 0.9)
        img += rng.uniform(0.25, 0.45) * _disc(rows, cols, cy, cx, rng.uniform(0.01, 0.018) * scale)
    # Side marker: a bright block in an upper corner.
    mr, mc = int(0.04 * rows), int(rng.choice([0.05, 0.88]) * cols)
    img[mr : mr + max(2, int(0.05 * rows)), mc : mc + max(2, int(0.04 * cols))] = 0.97
    img += rng.uniform(-0.03, 0.03) * (y - 0.5)  # exposure gradient
    img += rng.normal(0.0, rng.uniform(0.008, 0.016), size=(rows, cols)).astype(np.float32)  # quantum noise
    pixels = np.clip(img, 0.0, 1.0).astype(np.float32)[None]
    return RenderedImage(pixels=pixels, masks=masks, contrast=contrast)


def render_ct(
    rng: np.random.Generator,
    *,
    rows: int,
    cols: int,
    slices: int,
    nodule: bool,
    consolidation: bool,
    params: LesionParams = LesionParams(),
) -> RenderedImage:
    """Render a thin axial chest CT slab in Hounsfield units.

    Args:
        rng: random generator (consumed).
        rows: slice height in pixels.
        cols: slice width in pixels.
        slices: number of contiguous slices.
        nodule: draw a nodule (faint ground-glass disc through the slab).
        consolidation: draw a consolidation patch through the slab.
        params: lesion size and contrast ranges (contrast × ``params.ct_scale`` HU).

    Returns:
        :class:`RenderedImage` with pixels (S, H, W) in HU and masks (in-plane footprint, same on every slice).
    """
    y, x = _grid(rows, cols)
    scale = min(rows, cols)
    dy, dx = rng.normal(0.0, 0.015, size=2)
    body = _ellipse(y, x, 0.5 + dy, 0.5 + dx, 0.36, 0.46, 0.01)
    fat_inner = _ellipse(y, x, 0.5 + dy, 0.5 + dx, 0.33, 0.43, 0.01)
    right = _ellipse(y, x, 0.47 + dy, 0.3 + dx, 0.25, 0.16, 0.03)
    left = _ellipse(y, x, 0.47 + dy, 0.7 + dx, 0.24, 0.15, 0.03)
    lungs = np.clip(right + left, 0.0, 1.0)
    heart = _ellipse(y, x, 0.45 + dy, 0.55 + dx, 0.13, 0.12, 0.04)
    spine = _ellipse(y, x, 0.75 + dy, 0.5 + dx, 0.06, 0.05, 0.05)
    base = -1000.0 + body * (1000.0 - 100.0) + fat_inner * 140.0  # air → fat rim (-100) → muscle (+40)
    base += lungs * (-860.0 - 40.0) * fat_inner
    base += heart * 10.0
    base += spine * 650.0
    lung_core = lungs > 0.85
    masks: dict[str, np.ndarray] = {}
    contrast: dict[str, float] = {}
    profiles: list[tuple[np.ndarray, float]] = []
    if nodule:
        profile, mask = _nodule(rng, lung_core, params)
        amp = params.draw_contrast(rng, "nodule")
        profiles.append((profile, amp * params.ct_scale))
        masks["nodule"], contrast["nodule"] = mask, amp
    if consolidation:
        profile, mask = _consolidation(rng, lung_core, params)
        amp = params.draw_contrast(rng, "consolidation")
        profiles.append((profile, amp * params.ct_scale))
        masks["consolidation"], contrast["consolidation"] = mask, amp
    calcs = [(_pick_point(rng, lung_core), rng.uniform(0.008, 0.015) * scale) for _ in range(int(rng.integers(0, 3)))]
    out = np.empty((slices, rows, cols), dtype=np.float32)
    vessels = _smooth_noise(rng, (rows, cols), scale / 100)
    for s in range(slices):
        z = (s + 0.5) / slices - 0.5
        drift = 0.7 * vessels + 0.7 * _smooth_noise(rng, (rows, cols), scale / 100)
        sl = base + 60.0 * np.clip(drift, 0.0, None) * lungs  # vessels
        for profile, hu in profiles:
            sl = sl + hu * (1.0 - 1.2 * z * z) * profile
        for (cy, cx), r in calcs:  # calcified granulomas: small, very dense
            sl = sl + 500.0 * _disc(rows, cols, cy, cx, r)
        sl = sl + rng.normal(0.0, 18.0, size=(rows, cols)) * body
        out[s] = sl
    table = int(0.9 * rows)
    out[:, table : table + max(1, rows // 64), int(0.1 * cols) : int(0.9 * cols)] = 300.0  # CT table
    return RenderedImage(pixels=np.clip(out, -1024.0, 3000.0).astype(np.float32), masks=masks, contrast=contrast)
