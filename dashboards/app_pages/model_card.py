"""Model card: intended use, training data, labels and thresholds, limitations — read from the checkpoint."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import resources
from dashboards.data import DataError
from dashboards.settings import get_settings

settings = get_settings()
st.title("Model card")
if settings.model is None:
    st.info("No checkpoint given: start the dashboard with `--model DIR`.")
    st.stop()
try:
    info = resources.model_info(settings.model)
except DataError as err:
    st.error(str(err))
    st.stop()

card = info.card
st.subheader(info.name)
st.caption(f"version {info.version or 'n/a'} · sha256 `{info.sha256 or 'not recorded'}`")
st.markdown("#### Intended use")
st.write(card.get("intended_use") or "Not stated in the model card.")
st.markdown("#### Labels and decision thresholds")
st.dataframe(pd.DataFrame({"finding": info.labels,
                           "threshold": [info.thresholds.get(l) for l in info.labels]}),
             hide_index=True, key="card_labels")
if card.get("training_data"):
    st.markdown("#### Training data")
    st.json(card["training_data"], expanded=2)
if card.get("validation"):
    st.markdown("#### Validation (at training time)")
    st.json(card["validation"], expanded=2)
if card.get("architecture"):
    st.markdown("#### Architecture")
    st.json(card["architecture"], expanded=2)
st.markdown("#### Limitations")
limitations = card.get("limitations") or []
if isinstance(limitations, str):
    limitations = [limitations]
st.markdown("\n".join(f"- {item}" for item in limitations) or "None stated in the model card.")
shown = {"name", "intended_use", "training_data", "validation", "architecture", "limitations"}
rest = {k: v for k, v in card.items() if k not in shown}
if rest:
    with st.expander("Other card fields"):
        st.json(rest)
