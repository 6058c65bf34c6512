"""The launcher's command line (safe flags, settings after ``--``), settings parsing, and ``clinmm dashboard``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinmm import dashboard_launch
from clinmm.cli import app
from clinmm.dashboard_launch import build_command, launch
from clinmm.errors import ConfigError
from dashboards import APP_PATH
from dashboards.settings import DB_ENV, parse_settings


def flags(command: list[str]) -> dict[str, str]:
    head = command[: command.index("--")]
    return {head[i][2:]: head[i + 1] for i in range(5, len(head), 2)}


def test_safe_flags_and_settings_round_trip(scores_dir: Path, checkpoint_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    report.write_text("<html></html>")
    command = build_command(scores=scores_dir, model=checkpoint_dir, report=report, db_url="sqlite:///x.sqlite",
                            identified=True, max_upload_mb=50)
    assert command[1:5] == ["-m", "streamlit", "run", str(APP_PATH)]
    f = flags(command)
    assert f["server.address"] == "127.0.0.1" and f["server.port"] == "8501"
    assert f["server.enableXsrfProtection"] == "true" and f["server.maxUploadSize"] == "50"
    assert f["browser.gatherUsageStats"] == "false" and f["client.toolbarMode"] == "viewer"
    assert f["server.headless"] == "true" and f["client.showErrorDetails"] == "none"
    settings = parse_settings(command[command.index("--") + 1 :])
    assert settings.scores == scores_dir.resolve() and settings.model == checkpoint_dir.resolve()
    assert settings.report == report.resolve() and settings.db_url == "sqlite:///x.sqlite"
    assert settings.identified and settings.max_upload_mb == 50


def test_password_never_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg2://clin:s3cret@db.local/feedback"
    command = build_command(db_url=url)
    assert not any("s3cret" in part for part in command)
    seen = {}

    def fake_run(cmd: list[str], *, env: dict[str, str]) -> int:
        seen["cmd"], seen["env"] = cmd, env
        return 0

    monkeypatch.setattr(dashboard_launch, "_run_forwarding_signals", fake_run)
    assert launch(db_url=url) == 0
    assert seen["env"][DB_ENV] == url and seen["env"]["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv(DB_ENV, url)
    assert parse_settings([]).db_url == url  # the app finds it in its environment


def test_bad_inputs_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="--scores .*not a folder"):
        build_command(scores=tmp_path / "nope")
    with pytest.raises(ConfigError, match="--port"):
        build_command(port=70000)
    with pytest.raises(ConfigError, match="--max-upload-mb"):
        build_command(max_upload_mb=0)
    build_command(address="0.0.0.0")
    assert "not localhost" in caplog.text


def test_cli_dashboard_calls_the_launcher(monkeypatch: pytest.MonkeyPatch, scores_dir: Path) -> None:
    seen = {}

    def fake_run(cmd: list[str], *, env: dict[str, str]) -> int:
        seen["cmd"] = cmd
        return 0

    monkeypatch.setattr(dashboard_launch, "_run_forwarding_signals", fake_run)
    result = CliRunner().invoke(app, ["dashboard", "--scores", str(scores_dir), "--port", "8600"])
    assert result.exit_code == 0, result.output
    assert flags(seen["cmd"])["server.port"] == "8600"
    assert parse_settings(seen["cmd"][seen["cmd"].index("--") + 1 :]).scores == scores_dir.resolve()
    result = CliRunner().invoke(app, ["dashboard", "--scores", str(scores_dir / "missing")])
    assert result.exit_code == 2 and "not a folder" in result.output


def test_config_toml_matches_the_safe_defaults() -> None:
    import tomllib

    config = tomllib.loads((APP_PATH.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1" and config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False and config["client"]["toolbarMode"] == "viewer"
    assert 0 < config["server"]["maxUploadSize"] <= 2048


def test_sigterm_to_the_launcher_reaches_the_server() -> None:
    """A service manager's SIGTERM to `clinmm dashboard` must stop the server too, not orphan it."""
    import os
    import signal
    import sys
    import threading
    import time

    threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGTERM)).start()
    t0 = time.monotonic()
    code = dashboard_launch._run_forwarding_signals([sys.executable, "-c", "import time; time.sleep(60)"],
                                                    env=dict(os.environ))
    assert code == -signal.SIGTERM and time.monotonic() - t0 < 30
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
