"""The dashboard ships in the wheel: build it, install it outside the checkout, serve with ``clinmm dashboard``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_clinmm_dashboard_from_an_installed_wheel(tmp_path: Path, scores_dir: Path) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("clinmm-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    for name in ("streamlit_app.py", "app_pages/worklist.py", "app_pages/case.py", ".streamlit/config.toml"):
        assert (site / "dashboards" / name).is_file(), name
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site),
                                                                        "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import dashboards, clinmm; print(dashboards.APP_PATH)"],
                           cwd=outside, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(site / "dashboards" / "streamlit_app.py")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "clinmm.cli", "dashboard", "--scores", str(scores_dir),
                                "--db", f"sqlite:///{tmp_path / 'fb.sqlite'}", "--port", str(port)],
                               cwd=outside, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, health = time.time() + 120, b""
        while time.time() < deadline and health != b"ok":
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    health = response.read()
            except OSError:
                time.sleep(0.5)
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
        assert health == b"ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        process.terminate()
        process.wait(timeout=30)
    # SIGTERM to `clinmm dashboard` stops the Streamlit server it started (no orphan left on the port)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).close()
            time.sleep(0.5)
        except OSError:
            break
    else:
        raise AssertionError(f"the dashboard server on port {port} outlived `clinmm dashboard`")
