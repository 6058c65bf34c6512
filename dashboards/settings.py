"""Dashboard settings: what ``clinmm dashboard`` passes to the app after ``--`` on the ``streamlit run`` line.

This module and ``clinmm.cli`` are the only places that read argv. Pages call :func:`get_settings`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DB_ENV = "CLINMM_FEEDBACK_DB"

__all__ = ["DB_ENV", "DashboardSettings", "parse_settings", "get_settings", "to_argv", "default_db_url"]


def default_db_url() -> str:
    """SQLite file in the user's data folder (``~/.local/share/clinmm/feedback.sqlite``)."""
    path = Path.home() / ".local" / "share" / "clinmm" / "feedback.sqlite"
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class DashboardSettings:
    """What the dashboard serves.

    Args:
        scores: a ``clinmm score`` output folder (worklist); None shows an empty worklist with instructions.
        model: checkpoint directory (case view re-scoring and explanations, model card, score-one-study page).
        manifest: manifest the scores were computed from (image paths and notes for the case view); None means the
            ``input`` recorded in ``scores/run.json`` when it is a manifest.
        db_url: SQLAlchemy URL of the feedback database.
        report: validation report HTML (validation page).
        identified: identified mode requested (patient ID / accession shown, only to signed-in users).
        proxy_user_header: HTTP header set by an authenticating reverse proxy (e.g. ``X-Forwarded-User``); when
            set, a request carrying it counts as signed in. Only safe behind such a proxy.
        max_upload_mb: upload size limit (also passed to Streamlit as ``server.maxUploadSize``).
    """

    scores: Path | None = None
    model: Path | None = None
    manifest: Path | None = None
    db_url: str = ""
    report: Path | None = None
    identified: bool = False
    proxy_user_header: str | None = None
    max_upload_mb: int = 200

    @property
    def feedback_url(self) -> str:
        return self.db_url or default_db_url()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinmm-dashboard", add_help=False)
    parser.add_argument("--scores", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--db", dest="db_url", default="")
    parser.add_argument("--report", type=Path)
    parser.add_argument("--identified", action="store_true")
    parser.add_argument("--proxy-user-header", dest="proxy_user_header")
    parser.add_argument("--max-upload-mb", dest="max_upload_mb", type=int, default=200)
    return parser


def parse_settings(argv: Sequence[str]) -> DashboardSettings:
    """Parse the app's arguments (unknown ones are ignored, so Streamlit's own never break the app)."""
    args, _unknown = _parser().parse_known_args(list(argv))
    values = vars(args)
    # A URL with a password travels in the environment, not on the command line (visible in `ps`).
    values["db_url"] = values["db_url"] or os.environ.get(DB_ENV, "")
    return DashboardSettings(**values)


def to_argv(settings: DashboardSettings) -> list[str]:
    """The inverse of :func:`parse_settings` (what the launcher puts after ``--``)."""
    argv: list[str] = []
    for name in ("scores", "model", "manifest", "report"):
        value = getattr(settings, name)
        if value is not None:
            argv += [f"--{name}", str(Path(value).expanduser().resolve())]
    if settings.db_url and not _has_password(settings.db_url):
        argv += ["--db", settings.db_url]
    if settings.identified:
        argv.append("--identified")
    if settings.proxy_user_header:
        argv += ["--proxy-user-header", settings.proxy_user_header]
    argv += ["--max-upload-mb", str(settings.max_upload_mb)]
    return argv


def get_settings() -> DashboardSettings:
    """Settings of this app process (from ``sys.argv`` after the script name)."""
    return parse_settings(sys.argv[1:])


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password is not None
    except Exception:  # noqa: BLE001 - an unparsable URL is treated as secret
        return True
