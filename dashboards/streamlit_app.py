"""clinmm clinician dashboard — entry point (``streamlit run dashboards/streamlit_app.py -- --scores DIR ...``).

Shared state (settings, identity, sidebar) is set up here; each page in ``app_pages/`` renders one view.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import dashboards  # noqa: F401 - installed wheel or editable install
except ImportError:  # running from a source checkout without installing: the package root is two levels up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st

from dashboards.identity import current_identity
from dashboards.settings import get_settings

st.set_page_config(page_title="clinmm dashboard", page_icon=":material/radiology:", layout="wide")

settings = get_settings()
identity = current_identity(settings)

with st.sidebar:
    st.caption("clinmm — research decision support, not a medical device. Clinicians decide.")
    if identity.signed_in:
        st.caption(f"Signed in as **{identity.user}**")
        if identity.auth_required and not settings.proxy_user_header and st.button("Sign out", key="sign_out"):
            st.logout()
    else:
        st.caption(f"Local user **{identity.user}** (not signed in)")
    if settings.identified and not identity.identified:
        st.warning("Identified mode was requested but needs sign-in; only de-identified fields are shown.")
    elif identity.identified:
        st.info("Identified mode: patient ID and accession are shown.")

if identity.signed_in and st.session_state.get("clinmm_signed_in_logged") != identity.user:
    from dashboards import resources

    resources.feedback_store(settings.feedback_url).log(who=identity.user, session_id=identity.session_id,
                                                        action="sign_in")
    st.session_state["clinmm_signed_in_logged"] = identity.user

if identity.auth_required and not identity.signed_in:
    pages = [st.Page("app_pages/sign_in.py", title="Sign in", icon=":material/login:", default=True)]
else:
    pages = {
        "Review": [
            st.Page("app_pages/worklist.py", title="Worklist", icon=":material/list:", default=True),
            st.Page("app_pages/case.py", title="Case view", icon=":material/radiology:", url_path="case"),
            st.Page("app_pages/upload.py", title="Score one study", icon=":material/upload_file:",
                    url_path="score"),
        ],
        "Model": [
            st.Page("app_pages/validation.py", title="Validation", icon=":material/analytics:",
                    url_path="validation"),
            st.Page("app_pages/model_card.py", title="Model card", icon=":material/description:",
                    url_path="model_card"),
            st.Page("app_pages/feedback.py", title="Feedback", icon=":material/rate_review:", url_path="feedback"),
        ],
    }

st.navigation(pages).run()
