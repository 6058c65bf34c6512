"""Feedback: agreement rates per finding, the audit log, CSV export and export as a labelled training manifest."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from clinmm.feedback.store import build_feedback_manifest
from dashboards import resources
from dashboards.data import DataError, feedback_cases
from dashboards.identity import current_identity
from dashboards.settings import get_settings

settings = get_settings()
identity = current_identity(settings)
store = resources.feedback_store(settings.feedback_url)

st.title("Feedback")
st.caption(f"Database: `{store.display_url}`")
table = None
if settings.scores is not None:
    try:
        table = resources.scores(settings.scores)
    except DataError as err:
        st.error(str(err))
labels = table.labels if table else []
rates = store.agreement_rates(labels=labels)
st.dataframe(pd.DataFrame([{"finding": r.label, "reviews": r.n, "agree": r.n_agree,
                            "agreement rate": None if r.n == 0 else round(r.rate, 3)} for r in rates]),
             hide_index=True, key="fb_rates")
rows = store.feedback()
st.caption(f"{len(rows)} verdicts stored ({len(store.latest())} after keeping each reviewer's latest).")

c1, c2 = st.columns(2)
if c1.download_button("Export feedback (CSV)", store.to_csv(), file_name="clinmm_feedback.csv", mime="text/csv",
                      key="fb_csv", on_click="rerun"):
    store.log(who=identity.user, session_id=identity.session_id, action="export_csv", detail={"rows": len(rows)})
if table is not None and rows:
    cases = feedback_cases(table, manifest=settings.manifest, keys={r.study_key for r in rows})
    manifest_rows = build_feedback_manifest(rows, cases, labels=labels)
    buffer = io.StringIO()
    pd.DataFrame(manifest_rows).to_csv(buffer, index=False)
    if c2.download_button(f"Export labelled manifest ({len(manifest_rows)} studies)", buffer.getvalue(),
                          file_name="feedback_manifest.csv", mime="text/csv", key="fb_manifest", on_click="rerun"):
        store.log(who=identity.user, session_id=identity.session_id, action="export_manifest",
                  detail={"rows": len(manifest_rows)})
    st.caption("The manifest follows the training schema (label = the model's decision if agreed, its opposite if "
               "not; unreviewed findings blank) and can be passed to `clinmm train --manifest`.")

with st.expander("Audit log (latest 200 events)"):
    st.dataframe(pd.DataFrame([{"when": e.at.isoformat(timespec="seconds"), "who": e.who, "session": e.session_id,
                                "action": e.action, "target": e.target, "model": e.model_version}
                               for e in store.audit(limit=200)]), hide_index=True, key="fb_audit")
