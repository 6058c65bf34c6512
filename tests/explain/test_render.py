"""Overlays (legend, colour-blind-safe map, fixed scale) and the note page (escaped)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clinmm.explain.attention import ImageMap, LabelExplanation, WordScore
from clinmm.explain.render import overlay_rgba, render_note_html, render_overlay_png


def _label(heat):
    return LabelExplanation(label="nodule", prob=0.8, decision=True, threshold=0.5, modality_share=(0.6, 0.4),
                            image=ImageMap(grid=heat[:4, :4], heat=heat, peak=(0, 0)), words=[])


def test_overlay_png_has_legend_and_keeps_aspect():
    heat = np.zeros((120, 80))
    heat[:20, :20] = 3.0
    png = render_overlay_png(np.full((120, 80), 0.4), _label(heat))
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    w, h = img.size
    assert w > h * 80 / 120  # the colour bar adds width beside the image


def test_fixed_scale_same_heat_same_colour_across_studies():
    gray = np.full((10, 10), 0.5)
    a = np.zeros((10, 10))
    a[0, 0] = 2.0
    b = np.zeros((10, 10))
    b[0, 0] = 2.0
    b[5, 5] = 4.0  # a hotter study must not re-scale the first study's colours
    ra, rb = overlay_rgba(gray, a), overlay_rgba(gray, b)
    np.testing.assert_allclose(ra[0, 0], rb[0, 0])
    # a per-image min-max would paint a weak map as hot as a strong one: here a weak map stays near gray
    weak = overlay_rgba(gray, a * 0.1)
    assert np.abs(weak - 0.5).max() < 1e-9


def test_colormap_must_be_colour_blind_safe():
    with pytest.raises(ValueError, match="colour-blind"):
        overlay_rgba(np.zeros((2, 2)), np.zeros((2, 2)), cmap="jet")


def test_note_html_escapes_and_highlights():
    note = 'Fever <script>alert("x")</script> & chills'
    words = [WordScore(0, 5, "Fever", 0.5, 3.0), WordScore(6, 7, "<", 0.0, 0.0)]
    page = render_note_html(note, words, label="fever <b>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; chills" in page
    assert "fever &lt;b&gt;" in page
    assert page.count("<mark") == 1 and ">Fever</mark>" in page
    frag = render_note_html(note, words, standalone=False, evidence=[(0, 5), (36, 42)])
    assert frag.startswith('<div class="clinmm-note">') and '<u class="evidence">chills</u>' in frag
