"""Case view: one study's image, heatmaps, note evidence, probabilities, modality contribution and feedback."""

from __future__ import annotations

import streamlit as st

from dashboards import resources
from dashboards.case_panel import case_panels, feedback_form
from dashboards.case_result import stored_result
from dashboards.data import DataError, case_source
from dashboards.identity import current_identity
from dashboards.settings import get_settings

settings = get_settings()
identity = current_identity(settings)

st.title("Case view")
study_key = st.query_params.get("study") or st.session_state.get("clinmm_case")
if settings.scores is None or not study_key:
    st.info("Open a study from the **Worklist** (or score a single study on the *Score one study* page).")
    st.stop()
try:
    table = resources.scores(settings.scores)
    source = case_source(table, study_key, manifest=settings.manifest)
except DataError as err:
    st.error(str(err))
    st.stop()
st.query_params["study"] = study_key
store = resources.feedback_store(settings.feedback_url)
row = table.predictions[table.predictions["study_key"].astype(str) == study_key].iloc[0].to_dict()

info = resources.model_info(settings.model) if settings.model else None
model_version = info.display_version if info else str(row.get("model_sha256", ""))[:12]
if st.session_state.get("clinmm_viewed") != study_key:
    store.log(who=identity.user, session_id=identity.session_id, action="view_case", target=study_key,
              model_version=model_version)
    if identity.identified and source.identified:
        store.log(who=identity.user, session_id=identity.session_id, action="view_identified", target=study_key,
                  detail={"fields": sorted(source.identified)}, model_version=model_version)
    st.session_state["clinmm_viewed"] = study_key

st.subheader(f"Study {source.study_id or study_key[:12]}")
meta = [f"key `{study_key[:16]}`", *(f"{k}: {v}" for k, v in source.subgroups.items())]
if identity.identified:
    meta += [f"**{k}: {v}**" for k, v in source.identified.items()]
st.caption(" · ".join(meta))

status = str(row.get("status", "ok"))
if status != "ok":
    detail = row.get("detail")
    detail = f" ({detail})" if isinstance(detail, str) and detail else ""
    st.error(f"**Not scored in the batch run: {status}{detail}.** Results for this study are outside the model's "
             "validated use.", icon=":material/block:")
    if not st.session_state.get(f"force_{study_key}"):
        if st.button("Score anyway (outside validated use)", key="force_score"):
            st.session_state[f"force_{study_key}"] = True
            st.rerun()
        st.stop()

problem = resources.predictor_error(settings.model)
image_error = None
volume = None
if source.image_path is not None:
    try:
        volume = resources.volume(source.image_path)
    except ImportError as err:
        image_error = f"image loader unavailable: {err}"
    except Exception as err:  # noqa: BLE001 - IngestError and friends: show the status, keep the page alive
        image_error = getattr(err, "status", type(err).__name__)
if problem is None:
    result = resources.live_case(settings.model, source.image_path if volume is not None else None,
                                 source.note_text, study_key)
else:
    result = stored_result(row, table.labels, info.thresholds if info else None)
    st.info(f"Showing the stored scores; live explanations need the model: {problem}.")
if info:
    st.caption(f"Model **{info.name}** {info.version} · sha256 `{(result.model_sha256 or info.sha256)[:16]}`")

case_panels(result, volume, source.note_text, image_error=image_error, key="case")
st.divider()
previous = store.feedback(study_key=study_key)
if previous:
    with st.expander(f"Feedback already given on this study ({len(previous)})"):
        st.dataframe([{"when": r.created_at.isoformat(timespec="minutes"), "who": r.user, "finding": r.label,
                       "verdict": r.verdict, "comment": r.comment, "model": r.model_version} for r in previous],
                     hide_index=True)
feedback_form(result, store=store, identity=identity, study_key=study_key, study_id=source.study_id,
              model_version=model_version, key="case")
