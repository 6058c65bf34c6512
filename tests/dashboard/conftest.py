"""Fixtures for the dashboard tests: a real local PostgreSQL server, fabricated scoring outputs and checkpoints."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_fabricate import build_untrained_checkpoint, fabricate_checkpoint_dir, fabricate_scores_dir

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(available: bool, reason: str) -> None:
    """Skip with a visible reason locally; fail when ``CI=true`` (CI must have every tool)."""
    if not available:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throw-away PostgreSQL server on a free localhost port (Debian binaries) and yield its URL.

    As root, the server runs as the ``postgres`` system user through ``runuser`` (initdb refuses root).
    """
    bindir = _pg_bin()
    require_tool(bindir is not None, "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) not installed")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require_tool(False, "psycopg2 (pip install psycopg2-binary) not installed")
    prefix: list[str] = []
    if os.geteuid() == 0:
        require_tool(shutil.which("runuser") is not None and _user_exists("postgres"),
                     "running as root needs the 'postgres' system user and runuser")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="clinmm-pg-"))
    os.chmod(root, 0o777)
    data = root / "data"
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "clinmm", "--no-sync", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "clinmm", "feedback")
        yield f"postgresql+psycopg2://clinmm@127.0.0.1:{port}/feedback"
    except subprocess.CalledProcessError as err:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        pytest.fail(f"could not start PostgreSQL: {err.stderr}\n{log}")
    finally:
        if data.exists():
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture()
def scores_dir(tmp_path: Path) -> Path:
    """A scoring output folder fabricated for the tests (predictions + errors + run.json + manifest + DICOM)."""
    return fabricate_scores_dir(tmp_path / "scores")


@pytest.fixture()
def checkpoint_dir(tmp_path: Path) -> Path:
    """A checkpoint directory holding the files the dashboard reads (model card, labels, config)."""
    return fabricate_checkpoint_dir(tmp_path / "ckpt")


@pytest.fixture(scope="session")
def live_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadable checkpoint (untrained weights, real format and architecture) for the live-model tests."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_untrained_checkpoint(tmp_path_factory.mktemp("live") / "ckpt")
