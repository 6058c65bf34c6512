"""Sign-in page: the only page an unsigned session sees when sign-in is configured."""

from __future__ import annotations

import streamlit as st

from dashboards.identity import auth_configured
from dashboards.settings import get_settings

st.title("clinmm dashboard")
st.write("Sign in to see the worklist and cases.")
if auth_configured():
    if st.button("Sign in", key="sign_in", type="primary"):
        st.login()
else:
    header = get_settings().proxy_user_header
    st.error(f"This dashboard expects an authenticating reverse proxy that sets the `{header}` header. "
             "Open it through the proxy.")
