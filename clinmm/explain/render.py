"""Pictures of explanations: heatmap overlays (PNG) and the note with highlighted words (HTML).

Overlays use a colour-blind-safe sequential map (``cividis`` by default, ``viridis`` allowed) on a FIXED scale
``[0, vmax]`` shared by every study (see :mod:`clinmm.explain.attention` for what the numbers mean) and always carry a
colour bar with its unit. Heat below ``floor`` is transparent, so a study the model calls negative shows its image
almost untouched. The note page escapes every piece of the note (``html.escape``): a note can never inject markup.
"""

from __future__ import annotations

import html
import io

import numpy as np

from clinmm.explain.attention import IMAGE_VMAX, TEXT_VMAX, LabelExplanation, WordScore

__all__ = ["render_overlay_png", "overlay_rgba", "render_note_html", "COLORMAPS"]

COLORMAPS = ("cividis", "viridis")


def overlay_rgba(display: np.ndarray, heat: np.ndarray, *, vmax: float = IMAGE_VMAX, cmap: str = "cividis",
                 floor: float = 0.1, alpha: float = 0.55) -> np.ndarray:
    """Blend a heatmap over a grayscale display image.

    Args:
        display: (H0, W0) display image in [0, 1] (row 0 = top, as stored in the DICOM).
        heat: (H0, W0) heat on the same grid, fixed units.
        vmax: top of the fixed scale (values above are clipped, never rescaled per image).
        cmap: ``cividis`` or ``viridis``.
        floor: heat (as a fraction of ``vmax``) below which the overlay is transparent.
        alpha: opacity of the overlay at full heat.

    Returns:
        (H0, W0, 3) float RGB in [0, 1].
    """
    from matplotlib import colormaps

    if cmap not in COLORMAPS:
        raise ValueError(f"overlay colormap: expected one of {list(COLORMAPS)} (colour-blind safe), got {cmap!r}")
    if display.shape != heat.shape:
        raise ValueError(f"overlay: display shape {display.shape} differs from heatmap shape {heat.shape}")
    v = np.clip(np.asarray(heat, dtype=np.float64) / vmax, 0.0, 1.0)  # (H0, W0) fixed scale
    rgb = colormaps[cmap](v)[..., :3]  # (H0, W0, 3)
    a = np.where(v > floor, alpha * np.clip((v - floor) / max(1e-6, 1 - floor) * 2, 0.0, 1.0), 0.0)[..., None]
    gray = np.repeat(np.clip(display, 0.0, 1.0)[..., None], 3, axis=-1)
    return (1 - a) * gray + a * rgb


def render_overlay_png(display: np.ndarray, explanation: LabelExplanation, *, vmax: float = IMAGE_VMAX,
                       cmap: str = "cividis", title: str | None = None, dpi: int = 100) -> bytes:
    """One label's heatmap over the display image, with a colour bar legend, as PNG bytes.

    Args:
        display: (H0, W0) display image in [0, 1] (``Sample.display``; the VOI window is for display only).
        explanation: the label's explanation (``explanation.image.heat`` on the same grid).
        vmax: top of the fixed scale.
        cmap: ``cividis`` or ``viridis``.
        title: figure title (default: label, probability and method-neutral unit).
        dpi: output resolution.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if explanation.image is None:
        raise ValueError(f"label {explanation.label!r} has no image heatmap (no image in the study)")
    heat = explanation.image.heat
    if heat.ndim == 3:  # 3D token grid: show the slice with the peak
        heat = heat[explanation.image.peak[0]]
    rgb = overlay_rgba(display, heat, vmax=vmax, cmap=cmap)
    h0, w0 = display.shape
    fig_w = 4.2
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * h0 / w0 * 0.9 + 0.6), dpi=dpi)
    # origin="upper": row 0 of the DICOM is drawn at the top (no flip); extent keeps pixel centres.
    ax.imshow(rgb, origin="upper", interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"{explanation.label}: p={explanation.prob:.2f}", fontsize=9)
    sm = plt.cm.ScalarMappable(norm=Normalize(vmin=0.0, vmax=vmax), cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("evidence (x uniform x probability), fixed scale", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _colour(value: float, *, vmax: float, cmap: str) -> tuple[str, str]:
    from matplotlib import colormaps

    v = float(np.clip(value / vmax, 0.0, 1.0))
    r, g, b, _ = colormaps[cmap](v)
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}", "#000" if lum > 0.5 else "#fff"


def render_note_html(note: str, words: list[WordScore], *, label: str = "", vmax: float = TEXT_VMAX,
                     cmap: str = "cividis", floor: float = 0.1, evidence: list[tuple[int, int]] | None = None,
                     standalone: bool = True) -> str:
    """The note with its words highlighted by heat, every character escaped.

    Args:
        note: the original note text.
        words: the label's words (:attr:`LabelExplanation.words`), spans into ``note``.
        label: label name for the heading.
        vmax: top of the fixed scale.
        cmap: ``cividis`` or ``viridis``.
        floor: heat (fraction of ``vmax``) below which a word is not highlighted.
        evidence: optional (start, end) spans to underline (e.g. ground-truth evidence in validation).
        standalone: a whole HTML page (True) or a ``<div>`` fragment for embedding (dashboard, report).
    """
    if cmap not in COLORMAPS:
        raise ValueError(f"note colormap: expected one of {list(COLORMAPS)}, got {cmap!r}")
    marks = sorted(((w.start, w.end, w) for w in words if w.heat / vmax > floor and 0 <= w.start < w.end <= len(note)),
                   key=lambda t: t[0])
    under = sorted(evidence or [])
    parts: list[str] = []
    pos = 0

    def plain(a: int, b: int) -> str:
        text = note[a:b]
        out, i = [], a
        for s, e in under:  # underline evidence overlapping this plain run
            s, e = max(s, a), min(e, b)
            if s < e and s >= i:
                out += [html.escape(note[i:s]), f'<u class="evidence">{html.escape(note[s:e])}</u>']
                i = e
        out.append(html.escape(note[i:b]))
        return "".join(out) if under else html.escape(text)

    for s, e, w in marks:
        if s < pos:
            continue
        parts.append(plain(pos, s))
        bg, fg = _colour(w.heat, vmax=vmax, cmap=cmap)
        parts.append(f'<mark style="background:{bg};color:{fg}" title="{w.heat:.2f}">{html.escape(note[s:e])}</mark>')
        pos = e
    parts.append(plain(pos, len(note)))
    body = "".join(parts).replace("\n", "<br>\n")
    stops = ", ".join(_colour(vmax * t, vmax=vmax, cmap=cmap)[0] for t in np.linspace(0, 1, 6))
    legend = (f'<div class="legend" style="font-size:12px;margin-top:8px">0 '
              f'<span style="display:inline-block;width:160px;height:10px;background:linear-gradient(to right, '
              f'{stops})"></span> {vmax:g} — word evidence (x uniform x probability), fixed scale</div>')
    frag = (f'<div class="clinmm-note"><div style="font-size:13px;font-weight:600">{html.escape(label)}</div>'
            f'<div style="font-family:sans-serif;line-height:1.7;white-space:normal">{body}</div>{legend}</div>')
    if not standalone:
        return frag
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>clinmm note explanation {html.escape(label)}</title></head>"
            f'<body style="max-width:60em;margin:1em auto;font-family:sans-serif">{frag}</body></html>\n')
