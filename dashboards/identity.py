"""Who is using the dashboard, and what they may see.

Sign-in: Streamlit's OIDC ``st.login`` when an ``[auth]`` section is configured in ``.streamlit/secrets.toml``;
otherwise an authenticating reverse proxy that sets a user header (``--proxy-user-header``). Without either,
nobody is signed in: the dashboard works, de-identified, for the OS user who started it.
Identified mode (patient ID, accession) needs both the ``--identified`` setting and a signed-in user.
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass

import streamlit as st

from dashboards.settings import DashboardSettings

__all__ = ["Identity", "auth_configured", "current_identity"]


@dataclass(frozen=True)
class Identity:
    """The person behind this browser session.

    Args:
        user: signed-in user (email / name / proxy header), else the OS user running the dashboard.
        signed_in: True when an identity provider or the reverse proxy vouched for ``user``.
        session_id: random id of this browser session (audit log).
        auth_required: sign-in is configured, so nothing clinical is shown until it happens.
        identified: identified fields may be shown to this session.
    """

    user: str
    signed_in: bool
    session_id: str
    auth_required: bool
    identified: bool

    @property
    def may_view_cases(self) -> bool:
        return self.signed_in or not self.auth_required


def auth_configured() -> bool:
    """True when ``st.login`` can work: an ``[auth]`` section exists in the app's secrets."""
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, KeyError, RuntimeError):  # no secrets.toml at all
        return False


def _session_id() -> str:
    if "clinmm_session_id" not in st.session_state:
        st.session_state["clinmm_session_id"] = uuid.uuid4().hex[:16]
    return st.session_state["clinmm_session_id"]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown-os-user"


def current_identity(settings: DashboardSettings) -> Identity:
    """Resolve this session's identity from ``st.user`` (OIDC), the proxy header, or the OS user."""
    oidc = auth_configured()
    user, signed_in = "", False
    if oidc and bool(getattr(st.user, "is_logged_in", False)):
        user = str(st.user.get("email") or st.user.get("name") or st.user.get("sub") or "signed-in-user")
        signed_in = True
    elif settings.proxy_user_header:
        header = st.context.headers.get(settings.proxy_user_header) if st.context.headers else None
        if header:
            user, signed_in = header.strip(), True
    auth_required = oidc or bool(settings.proxy_user_header)
    return Identity(
        user=user or _os_user(),
        signed_in=signed_in,
        session_id=_session_id(),
        auth_required=auth_required,
        identified=bool(settings.identified and signed_in),
    )
