"""Display helpers for the case view: window presets, window/level, the heatmap legend, the scrubbing notice.

Overlays and the highlighted note come from :mod:`clinmm.explain.render` (fixed scales, colour-blind-safe ``cividis``,
escaped HTML), so the dashboard, ``clinmm explain`` and the validation report draw explanations the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "WindowPreset",
    "window_presets",
    "apply_window",
    "legend_png",
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


def legend_png(*, vmax: float, label: str, cmap: str = "cividis") -> bytes:
    """A horizontal colour bar for the overlay on the fixed scale [0, ``vmax``], as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(4.0, 0.55), dpi=100)
    fig.colorbar(ScalarMappable(norm=Normalize(0, vmax), cmap=cmap), cax=ax, orientation="horizontal")
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
