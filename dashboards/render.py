"""Display helpers for the case view: window/level, heatmap overlay, highlighted note, probability table.

The overlay and note highlighting prefer ``clinmm.explain`` renderers when that module provides them; the small
versions here keep the same rules (fixed 0..1 scale so a negative study never looks "hot", the colour-blind-safe
``cividis`` map, a legend, HTML-escaped text).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WindowPreset",
    "window_presets",
    "apply_window",
    "overlay_heatmap",
    "legend_png",
    "highlight_note_html",
    "SCRUB_NOTICE",
]

SCRUB_NOTICE = ("Note shown after automatic, best-effort removal of identifiers (names, dates, numbers). "
                "Scrubbing can miss identifiers: do not copy notes out of the dashboard.")


@dataclass(frozen=True)
class WindowPreset:
    """A display window in modality units (HU for CT)."""

    name: str
    center: float
    width: float


def window_presets(pixels: np.ndarray, modality: str, meta: dict | None = None) -> list[WindowPreset]:
    """Window presets on modality values: robust auto range, full range, and the usual CT windows for CT.

    Args:
        pixels: (S, H, W) or (H, W) modality values (higher = brighter).
        modality: DICOM modality.
        meta: de-identified meta (unused today; kept for modality-specific presets).
    """
    lo, hi = np.percentile(pixels, [0.5, 99.5]) if pixels.size else (0.0, 1.0)
    # The header's own VOI window is applied by ingestion (``ImageVolume.display``, MONOCHROME1 handled there);
    # the pages offer it as the first choice, these presets work on the modality values.
    presets = []
    presets.append(WindowPreset("Auto (0.5–99.5 %)", float((lo + hi) / 2), float(max(hi - lo, 1e-6))))
    presets.append(WindowPreset("Full range", float((pixels.min() + pixels.max()) / 2) if pixels.size else 0.5,
                                float(max(np.ptp(pixels) if pixels.size else 1.0, 1e-6))))
    if modality.upper() == "CT":
        presets += [WindowPreset("Lung", -600.0, 1500.0), WindowPreset("Mediastinum", 40.0, 400.0),
                    WindowPreset("Bone", 400.0, 1800.0), WindowPreset("Brain", 40.0, 80.0)]
    return presets


def apply_window(image: np.ndarray, *, center: float, width: float) -> np.ndarray:
    """Linear window (DICOM PS3.3 C.11.2.1.2 without the 0.5 offsets): (H, W) modality values → uint8 (H, W)."""
    width = max(float(width), 1e-6)
    low = center - width / 2
    scaled = np.clip((image.astype(np.float32) - low) / width, 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def _cmap_rgb(values: np.ndarray, cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3] * 255.0).astype(np.float32)


def overlay_heatmap(gray: np.ndarray, heat: np.ndarray, *, opacity: float = 0.45, cmap: str = "cividis") -> np.ndarray:
    """Blend a heatmap on a grayscale image on a FIXED 0..1 scale (no per-image rescaling).

    Args:
        gray: (H, W) uint8 display image.
        heat: (H, W) attribution in [0, 1] on the same grid (values outside are clipped).
        opacity: maximum blend weight; each pixel's weight is ``opacity * heat``, so cold regions stay unchanged.
        cmap: matplotlib colour map (``cividis`` is colour-blind safe and monotone in lightness).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if gray.shape != heat.shape:
        raise ValueError(f"heatmap shape {heat.shape} does not match image shape {gray.shape}")
    heat = np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)  # (H, W, 3)
    alpha = (opacity * heat)[..., None]  # (H, W, 1)
    return (base * (1 - alpha) + _cmap_rgb(heat, cmap) * alpha + 0.5).astype(np.uint8)


def legend_png(*, cmap: str = "cividis", label: str = "attention (fixed scale 0–1)") -> bytes:
    """A horizontal colour bar for the overlay, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.cm import ScalarMappable

    fig, ax = plt.subplots(figsize=(4.0, 0.55), dpi=100)
    fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), cax=ax, orientation="horizontal")
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def highlight_note_html(text: str, spans: Sequence[tuple[int, int, float]], *, top_k: int = 12) -> str:
    """The note as HTML with the ``top_k`` most-attributed character spans highlighted (fixed 0..1 opacity scale).

    Args:
        text: the (scrubbed) note; offsets refer to it.
        spans: (start, end, weight ≥ 0) character spans; overlapping spans (chunk overlaps) are merged by taking
            the maximum weight per character, so chunk boundaries are invisible.
        top_k: number of highlighted spans.
    """
    if not text:
        return ""
    weight = np.zeros(len(text), dtype=np.float32)
    ranked = sorted((s for s in spans if s[1] > s[0]), key=lambda s: -s[2])[:top_k]
    peak = max((w for *_, w in ranked), default=0.0)
    for start, end, w in ranked:
        start, end = max(0, int(start)), min(len(text), int(end))
        # Normalised to the strongest span of this note and label, shown on a fixed 0.15..0.85 opacity scale.
        weight[start:end] = np.maximum(weight[start:end], (w / peak) if peak > 0 else 0.0)
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and weight[j] == weight[i]:
            j += 1
        chunk = html.escape(text[i:j]).replace("\n", "<br>")
        if weight[i] > 0:
            alpha = 0.15 + 0.7 * float(weight[i])
            out.append(f'<mark style="background: rgba(0, 114, 178, {alpha:.2f}); color: inherit; '
                       f'padding: 0 1px;" title="relative attention {weight[i]:.2f}">{chunk}</mark>')
        else:
            out.append(chunk)
        i = j
    return '<div class="clinmm-note" style="line-height: 1.6;">' + "".join(out) + "</div>"
