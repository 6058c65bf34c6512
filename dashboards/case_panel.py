"""The case panel shared by the case view and the score-one-study page: banners, image with window/level and heatmap
overlay, probabilities with thresholds and modality share, the scrubbed note with highlighted evidence, feedback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from clinmm.feedback.store import FeedbackError, FeedbackStore
from dashboards.case_result import CaseResult, remap_words, scrub_note
from dashboards.identity import Identity
from dashboards.render import SCRUB_NOTICE, apply_window, legend_png, window_presets

__all__ = ["case_panels", "missing_banners", "study_check_banners", "image_panel", "probability_panel", "note_panel",
           "feedback_form"]


def case_panels(result: CaseResult, volume: Any | None, note: str, *, image_error: str | None, key: str) -> None:
    """The study as both pages show it: missing-modality banners, image (left) beside probabilities (right), the note.

    Args:
        result: the prediction to show.
        volume: the study's image volume, or None.
        note: the raw note ("" when none).
        image_error: why the image could not be read, for the banner.
        key: widget-key prefix (one per page).
    """
    study_check_banners(result)
    missing_banners(result, image_error=image_error)
    left, right = st.columns([3, 2])
    with left:
        if volume is not None:
            image_panel(volume, result, key=key)
    with right:
        probability_panel(result)
    note_panel(note, result, key=key)


def missing_banners(result: CaseResult, *, image_error: str | None = None) -> None:
    """A clear banner for each missing modality (the prediction used only what was present)."""
    if not result.image_present:
        reason = f" ({image_error})" if image_error else ""
        st.warning(f"**No image for this study{reason}.** The prediction is based on the note only; "
                   "image-only findings are unreliable.", icon=":material/hide_image:")
    if not result.note_present:
        st.warning("**No clinical note for this study.** The prediction is based on the image only; "
                   "note-only findings are unreliable.", icon=":material/speaker_notes_off:")


def study_check_banners(result: CaseResult) -> None:
    """Out of the model's scope (an error), or unlike its training images (a warning listing what differs)."""
    if result.scope_message:
        st.error(f"**This study is {result.scope_message}.**", icon=":material/block:")
    unlike = list(getattr(result.check, "unlike_training", None) or [])
    if not unlike:  # a stored scoring row keeps only the codes (e.g. "intensity:p95", "grid:rows")
        unlike = [f"{code.replace(':', ' ')} outside the training images' range"
                  for code in getattr(result.check, "codes", None) or []]
    if unlike:
        st.warning("**This image is unlike the images the model was trained on**; treat the prediction and the "
                   "heatmaps as an extrapolation:\n" + "\n".join(f"- {line}" for line in unlike),
                   icon=":material/warning:")


def image_panel(volume: Any, result: CaseResult, *, key: str) -> None:
    """DICOM image with window/level presets and sliders, slice scroller, per-label heatmap toggle and opacity."""
    pixels = np.asarray(volume.pixels)  # (S, H, W) modality values
    n_slices = pixels.shape[0]
    index = result.heat_slice
    if n_slices > 1:
        index = st.slider("Slice", 0, n_slices - 1, int(result.heat_slice or n_slices // 2), key=f"{key}_slice")
    presets = window_presets(pixels, volume.modality, volume.meta)
    voi = "DICOM window (from the header)"
    names = [voi, *(p.name for p in presets)]
    choice = st.selectbox("Window preset", names, key=f"{key}_preset")
    if choice == voi:
        gray = (np.clip(np.asarray(volume.display[index]), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)  # (H, W)
    else:
        preset = presets[names.index(choice) - 1]
        lo, hi = float(pixels.min()), float(pixels.max())
        span = max(hi - lo, 1e-3)
        c1, c2 = st.columns(2)
        center = c1.slider("Level (centre)", lo - span, hi + span, float(np.clip(preset.center, lo - span, hi + span)),
                           key=f"{key}_center_{choice}")
        width = c2.slider("Width", span / 1000, 4 * span, float(np.clip(preset.width, span / 1000, 4 * span)),
                          key=f"{key}_width_{choice}")
        gray = apply_window(pixels[index], center=center, width=width)  # (H, W) uint8
    h1, h2, h3 = st.columns([1, 2, 2])
    show = h1.toggle("Heatmap", key=f"{key}_heat_on", disabled=not result.heatmaps)
    label = h2.selectbox("Heatmap finding", result.labels, key=f"{key}_heat_label", disabled=not show)
    opacity = h3.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}_opacity", disabled=not show)
    caption = f"{volume.modality} · {pixels.shape[1]}×{pixels.shape[2]} px · slice {index + 1}/{n_slices}"
    if show and label in result.heatmaps and index == result.heat_slice:
        from clinmm.explain.render import overlay_rgba

        rgb = overlay_rgba(gray / 255.0, result.heatmaps[label], vmax=result.image_vmax, alpha=opacity)  # (H, W, 3)
        st.image((rgb * 255 + 0.5).astype(np.uint8), caption=f"{caption} · heatmap: {label}", width="stretch")
        st.image(legend_png(vmax=result.image_vmax,
                            label=f"{label}: evidence (× uniform × probability), fixed scale 0–{result.image_vmax:g}"))
        traced = (", traced back to the image region it was read from (each region replaced in turn by healthy "
                  "anatomy)" if result.heat_carried else "")
        st.caption("Heat: each region's share of what raised the finding's score in the model's attention "
                   f"(Shapley value){traced}; regions that argue against the finding stay uncoloured. Measured "
                   "faithfulness: see the validation report.")
    else:
        st.image(gray, caption=caption, width="stretch", clamp=True)
        if show and index != result.heat_slice:
            st.caption(f"The model read slice {result.heat_slice + 1}; scroll there to see its heatmap.")
    if not result.heatmaps:
        st.caption("No heatmap: the live model is not loaded (stored scores shown) or its fusion has no attention.")


def probability_panel(result: CaseResult) -> None:
    """Probability bars with each label's decision threshold, and the modality-contribution bar per label."""
    table = pd.DataFrame(result.table())
    st.dataframe(
        table, hide_index=True, width="stretch", key="prob_table",
        column_config={
            "probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0,
                                                           format="%.2f"),
            "threshold": st.column_config.NumberColumn("threshold", format="%.2f"),
        },
    )
    if result.without:
        effect = pd.DataFrame({
            "finding": list(result.without),
            "image": [None if v[0] is None else float(result.probs[c]) - v[0]
                      for c, v in enumerate(result.without.values())],
            "note": [None if v[1] is None else float(result.probs[c]) - v[1]
                     for c, v in enumerate(result.without.values())]})
        st.caption("What each modality did: the probability minus the model's probability with that modality removed "
                   "(its own missing-modality path; columns 'without image' / 'without note' above). Positive: the "
                   "modality raised the finding.")
        st.bar_chart(effect, x="finding", y=["image", "note"], horizontal=True, stack=False,
                     color=["#0072B2", "#E69F00"], height=90 + 36 * len(effect), x_label="probability change",
                     y_label="", sort=False)
    elif result.modality_share:
        share = pd.DataFrame({"finding": list(result.modality_share),
                              "image": [v[0] for v in result.modality_share.values()],
                              "note": [v[1] for v in result.modality_share.values()]})
        st.caption("Modality share: how large the image and the note summaries are in each finding's fused vector. "
                   "It is not how much each one moved the probability (measured: it does not track that).")
        st.bar_chart(share, x="finding", y=["image", "note"], horizontal=True, stack="normalize",
                     color=["#0072B2", "#E69F00"], height=90 + 36 * len(share), x_label="modality share",
                     y_label="", sort=False)
    st.caption(f"Source: {'live model' if result.source == 'live' else 'stored scoring output'}")


def note_panel(note: str, result: CaseResult, *, key: str) -> None:
    """The scrubbed note with the chosen finding's evidence words highlighted (fixed scale; chunk seams merged)."""
    if not note:
        return
    scrubbed = scrub_note(note)
    st.caption(SCRUB_NOTICE)
    labels = [l for l in result.labels if result.note_words.get(l)]
    if labels:
        from clinmm.explain.render import render_note_html

        label = st.selectbox("Highlight evidence for", labels, key=f"{key}_note_label")
        words = remap_words(note, scrubbed, result.note_words[label])
        st.html(render_note_html(scrubbed, words, label=label, vmax=result.text_vmax, standalone=False))
        st.caption("Highlight: each word's share of what raised the finding's score, carried back from the text "
                   "model's tokens to the words they drew on; words that argue against the finding stay uncoloured. "
                   "Measured faithfulness: see the validation report.")
    else:
        st.text(scrubbed)


def feedback_form(result: CaseResult, *, store: FeedbackStore, identity: Identity, study_key: str,
                  study_id: str | None, model_version: str, key: str) -> None:
    """Agree / disagree + comment per label, stored with an audit event."""
    with st.form(f"{key}_feedback", clear_on_submit=False):
        st.markdown("**Your assessment** (leave *—* for findings you did not review). "
                    "Do not type names or other identifiers in comments.")
        verdicts: dict[str, tuple[str, str]] = {}
        for c, label in enumerate(result.labels):
            decision = "positive" if int(result.decisions[c]) else "negative"
            a, b = st.columns([2, 3])
            verdict = a.radio(f"{label} — model says {decision} ({float(result.probs[c]):.2f})",
                              ["—", "agree", "disagree"], horizontal=True, key=f"{key}_fb_{label}")
            comment = b.text_input(f"Comment on {label}", key=f"{key}_fbc_{label}", max_chars=500)
            verdicts[label] = (verdict, comment)
        submitted = st.form_submit_button("Submit feedback", type="primary")
    if not submitted:
        return
    stored = 0
    try:
        for c, label in enumerate(result.labels):
            verdict, comment = verdicts[label]
            if verdict == "—":
                continue
            store.record(study_key=study_key, study_id=study_id, label=label, verdict=verdict, comment=comment,
                         user=identity.user, session_id=identity.session_id, prob=float(result.probs[c]),
                         decision=int(result.decisions[c]), model_version=model_version,
                         model_sha256=result.model_sha256)
            stored += 1
    except FeedbackError as err:
        st.error(f"Feedback not saved: {err}")
        return
    if stored:
        st.success(f"Feedback saved for {stored} finding(s).")
    else:
        st.info("Nothing to save: choose agree or disagree for at least one finding.")
