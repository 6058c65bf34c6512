"""Start the clinician dashboard: ``streamlit run`` on the packaged app with safe flags.

What ``clinmm dashboard`` calls. The app ships in the wheel (package ``dashboards``), so this works outside a
checkout. Safe defaults are passed as flags (they hold whatever the working directory's ``.streamlit/`` says):
bound to 127.0.0.1, XSRF protection on, an upload size limit, usage statistics off, the viewer toolbar (no Deploy
button), no file watcher, error details hidden from the browser. The app's own settings go after ``--``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from clinmm.errors import ConfigError

__all__ = ["SAFE_FLAGS", "build_command", "launch"]

logger = logging.getLogger(__name__)

#: Streamlit options every launch sets (server.address / port / maxUploadSize are added per call).
SAFE_FLAGS: dict[str, str] = {
    "server.enableXsrfProtection": "true",
    "server.enableCORS": "true",
    "server.headless": "true",
    "server.runOnSave": "false",
    "server.fileWatcherType": "none",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "viewer",
    "client.showErrorDetails": "none",
    "runner.magicEnabled": "false",
}


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def build_command(
    *,
    scores: Path | None = None,
    model: Path | None = None,
    report: Path | None = None,
    manifest: Path | None = None,
    db_url: str | None = None,
    address: str = "127.0.0.1",
    port: int = 8501,
    identified: bool = False,
    proxy_user_header: str | None = None,
    max_upload_mb: int = 200,
    python: str | None = None,
) -> list[str]:
    """The ``streamlit run`` command line for the packaged app.

    Args:
        scores: ``clinmm score`` output folder for the worklist.
        model: checkpoint directory (case view, model card, score-one-study page).
        report: validation report HTML.
        manifest: manifest the scores came from (image paths and notes for the case view).
        db_url: feedback SQLAlchemy URL (default: a SQLite file in the user's data folder). A URL holding a password
            is not put on the command line; :func:`launch` passes it in the child's environment instead.
        address: bind address; anything but loopback is logged as a warning (put a reverse proxy with TLS and
            authentication in front instead).
        port: TCP port.
        identified: request identified mode (shown only to signed-in users).
        proxy_user_header: header an authenticating reverse proxy sets with the user name.
        max_upload_mb: upload size limit in MB (1..2048).
        python: interpreter to run Streamlit with (default: this one).

    Raises:
        ConfigError: a given folder/file does not exist, or a value is out of range.
    """
    from dashboards import APP_PATH
    from dashboards.settings import DashboardSettings, to_argv

    for name, path, want_dir in (("scores", scores, True), ("model", model, True), ("report", report, False),
                                 ("manifest", manifest, False)):
        if path is None:
            continue
        path = Path(path).expanduser()
        if want_dir and not path.is_dir():
            raise ConfigError(f"--{name} {path}: not a folder")
        if not want_dir and not path.is_file():
            raise ConfigError(f"--{name} {path}: no such file")
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    if not 1 <= int(max_upload_mb) <= 2048:
        raise ConfigError(f"--max-upload-mb must be in 1..2048, got {max_upload_mb}")
    if not _is_loopback(address):
        logger.warning("dashboard bound to %s, not localhost: put an authenticating TLS proxy in front", address)
    settings = DashboardSettings(scores=scores, model=model, manifest=manifest, db_url=db_url or "", report=report,
                                 identified=identified, proxy_user_header=proxy_user_header,
                                 max_upload_mb=int(max_upload_mb))
    flags = {"server.address": address, "server.port": str(int(port)), "server.maxUploadSize": str(int(max_upload_mb)),
             **SAFE_FLAGS}
    command = [python or sys.executable, "-m", "streamlit", "run", str(APP_PATH)]
    for key, value in flags.items():
        command += [f"--{key}", value]
    return [*command, "--", *to_argv(settings)]


def launch(
    *,
    scores: Path | None = None,
    model: Path | None = None,
    report: Path | None = None,
    db_url: str | None = None,
    address: str = "127.0.0.1",
    port: int = 8501,
    identified: bool = False,
    manifest: Path | None = None,
    proxy_user_header: str | None = None,
    max_upload_mb: int = 200,
) -> int:
    """Run the dashboard in the foreground until it stops (Ctrl-C); returns Streamlit's exit code.

    Arguments as in :func:`build_command`.
    """
    from dashboards.settings import DB_ENV

    command = build_command(scores=scores, model=model, report=report, manifest=manifest, db_url=db_url,
                            address=address, port=port, identified=identified, proxy_user_header=proxy_user_header,
                            max_upload_mb=max_upload_mb)
    child_env = dict(os.environ)
    if db_url:
        child_env[DB_ENV] = db_url  # reaches the app even when kept off the command line (password)
    child_env.setdefault("HF_HUB_OFFLINE", "1")
    child_env.setdefault("TRANSFORMERS_OFFLINE", "1")
    logger.info("serving the dashboard on http://%s:%d", address, port)
    return _run_forwarding_signals(command, env=child_env)


def _run_forwarding_signals(command: list[str], *, env: dict[str, str]) -> int:
    """Run ``command`` in the foreground; SIGTERM / SIGHUP sent to this process reach the server too.

    Without this, stopping ``clinmm dashboard`` with ``kill`` (a service manager, a test) would leave the Streamlit
    server running, orphaned, on its port. Ctrl-C reaches both through the terminal's process group.
    """
    child = subprocess.Popen(command, env=env)
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda signum, _frame: child.send_signal(signum)) for sig in forwarded}
    try:
        return child.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
