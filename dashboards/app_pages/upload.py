"""Score one study: upload a DICOM file (or a zip of a series), paste a note, see the scored and explained result."""

from __future__ import annotations

import hashlib

import streamlit as st

from dashboards import resources
from dashboards.case_panel import case_panels
from dashboards.case_result import live_result
from dashboards.identity import current_identity
from dashboards.settings import get_settings
from dashboards.uploads import UploadError, staged_upload

settings = get_settings()
identity = current_identity(settings)

st.title("Score one study")
problem = resources.predictor_error(settings.model)
if problem:
    st.info(f"Scoring needs the model: {problem}.")
    st.stop()
st.caption(f"Uploads are processed in a private temporary folder that is deleted right after scoring; "
           f"limit {settings.max_upload_mb} MB.")
with st.form("upload_form"):
    upload = st.file_uploader("DICOM file, or a .zip of one series", type=["dcm", "dicom", "zip"],
                              key="upload_file")
    note = st.text_area("Clinical note (optional)", key="upload_note", height=160)
    go = st.form_submit_button("Score and explain", type="primary")

if go:
    if upload is None and not note.strip():
        st.warning("Upload an image or paste a note first.")
        st.stop()
    predictor = resources.predictor(settings.model)
    volume, image_error = None, None
    try:
        if upload is not None:
            with staged_upload(upload.name, upload.getvalue()) as staged:
                try:
                    from clinmm.io.load import load_image  # read fully into memory before the folder is deleted

                    volume = load_image(staged.image_path)
                except ImportError as err:
                    image_error = f"image loader unavailable: {err}"
                except Exception as err:  # noqa: BLE001 - IngestError etc.: shown as a status, the page keeps working
                    image_error = getattr(err, "status", type(err).__name__)
                digest = staged.digest
        else:
            digest = hashlib.sha256(note.encode("utf-8")).hexdigest()
    except UploadError as err:
        st.error(str(err))
        st.stop()
    result = live_result(predictor, volume, note, key=f"upload-{digest[:12]}")
    resources.feedback_store(settings.feedback_url).log(
        who=identity.user, session_id=identity.session_id, action="score_upload", target=f"upload-{digest[:12]}",
        detail={"image": volume is not None, "note": bool(note.strip())})
    st.session_state["upload_result"] = (result, volume, note, image_error)
    st.session_state["upload_force"] = False

if "upload_result" in st.session_state:
    result, volume, note_text, image_error = st.session_state["upload_result"]
    if result.scope_message and not st.session_state.get("upload_force"):
        st.error(f"**Not scored: this study is {result.scope_message}.**", icon=":material/block:")
        if st.button("Show the result anyway (outside validated use)", key="upload_force_button"):
            st.session_state["upload_force"] = True
            st.rerun()
        st.stop()
    case_panels(result, volume, note_text, image_error=image_error, key="upload")
