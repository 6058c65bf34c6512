"""Worklist: scored studies, filtered and sorted by a finding's probability, decision, missing modality, status."""

from __future__ import annotations

import streamlit as st

from dashboards import resources
from dashboards.data import DataError, deidentified_columns, filter_worklist, worklist_counts
from dashboards.identity import current_identity
from dashboards.settings import get_settings

settings = get_settings()
identity = current_identity(settings)

st.title("Worklist")
if settings.scores is None:
    st.info("No scoring output given. Start the dashboard with `clinmm dashboard --scores DIR` where DIR is a "
            "`clinmm score ... --out DIR` folder, or score a single study on the *Score one study* page.")
    st.stop()
try:
    table = resources.scores(settings.scores)
except DataError as err:
    st.error(str(err))
    st.stop()

counts = worklist_counts(table)
cols = st.columns(7)
for col, (name, key) in zip(cols, [("Studies", "studies"), ("Scored", "ok"), ("Not scored", "not_ok"),
                                   ("No image", "missing_image"), ("No note", "missing_note"),
                                   ("Unlike training", "unlike_training"), ("File errors", "file_errors")],
                            strict=True):
    col.metric(name, counts[key])

with st.container(border=True):
    f1, f2, f3, f4, f5, f6 = st.columns([2, 2, 2, 2, 2, 2])
    label = f1.selectbox("Finding", ["(highest of any)", *table.labels], key="wl_label")
    label = None if label.startswith("(") else label
    min_prob = f2.slider("Min. probability", 0.0, 1.0, 0.0, 0.05, key="wl_min_prob", disabled=label is None)
    decision = f3.selectbox("Decision", ["any", "positive", "negative"], key="wl_decision", disabled=label is None)
    missing = f4.selectbox("Modalities", ["any", "none", "image", "note"], key="wl_missing",
                           format_func={"any": "any", "none": "both present", "image": "image missing",
                                        "note": "note missing"}.get)
    status = f5.selectbox("Status", ["any", "ok", "not_ok"], key="wl_status")
    usual = f6.selectbox("Image vs training", ["any", "unlike", "usual"], key="wl_usual",
                         format_func={"any": "any", "unlike": "unlike training images",
                                      "usual": "like training images"}.get)

rows = filter_worklist(table.predictions, label=label, min_prob=min_prob, decision=decision, missing=missing,
                       status=status, usual=usual)
st.caption(f"{len(rows)} of {len(table.predictions)} studies match.")
columns = deidentified_columns(rows, identified=identity.identified)
event = st.dataframe(
    rows[columns], hide_index=True, width="stretch", key="wl_table", on_select="rerun", selection_mode="single-row",
    column_config={f"prob_{l}": st.column_config.ProgressColumn(l, min_value=0.0, max_value=1.0, format="%.2f")
                   for l in table.labels},
)

if len(rows):
    keys = rows["study_key"].astype(str).tolist()
    ids = dict(zip(keys, rows["study_id"].astype(str) if "study_id" in rows.columns else keys, strict=True))
    picked = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if picked and picked[0] < len(keys):  # a row clicked in the table selects it below
        st.session_state["wl_case"] = keys[picked[0]]
    choice = st.selectbox("Study (or click a row above)", keys, key="wl_case",
                          format_func=lambda k: f"{ids[k]} ({k[:10]})")
    if st.button("Open case", key="open_case", type="primary"):
        st.session_state["clinmm_case"] = choice
        st.switch_page("app_pages/case.py", query_params={"study": choice})

if len(table.errors):
    with st.expander(f"File errors ({len(table.errors)})"):
        st.dataframe(table.errors[[c for c in ("path", "status", "detail") if c in table.errors.columns]],
                     hide_index=True, width="stretch")
