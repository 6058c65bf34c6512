"""Validation: the report's headline numbers and a link to the full self-contained HTML report."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.data import DataError, report_headline
from dashboards.settings import get_settings

settings = get_settings()
st.title("Validation")
if settings.report is None:
    st.info("No validation report given: create one with `clinmm report --model CKPT --manifest M --out R.html` "
            "and start the dashboard with `--report R.html`.")
    st.stop()
try:
    headline = report_headline(settings.report)
except DataError as err:
    st.error(str(err))
    st.stop()
st.subheader(headline.title or headline.path.name)
if headline.metrics:
    st.dataframe(pd.DataFrame(headline.metrics), hide_index=True, key="report_metrics")
else:
    st.caption("The report has no headline sidecar (JSON); open the full report below.")
html = headline.path.read_bytes()
st.download_button("Open / download the full report (HTML)", html, file_name=headline.path.name,
                   mime="text/html", key="report_download")
st.caption(f"Report file: `{headline.path}`")
