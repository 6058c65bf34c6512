"""Fixtures for the real-browser dashboard test: an (untrained, real-format) checkpoint, real scores, the server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "sample_data" / "tiny"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(available: bool, reason: str) -> None:
    """Skip with a visible reason locally; fail when ``CI=true``."""
    if not available:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def e2e_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint in the real format (demo architecture, untrained weights: plumbing, not accuracy) and a real
    ``clinmm score`` output for four radiograph studies of the committed tiny sample set."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    require_tool((TINY / "manifest.csv").is_file(), "sample_data/tiny is missing")
    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import build_model, save_checkpoint
    from clinmm.config import demo_config
    from clinmm.score import ScoreOptions, score

    root = tmp_path_factory.mktemp("e2e")
    manifest = pd.read_csv(TINY / "manifest.csv", dtype=str, keep_default_na=False)
    labels = [c[len("label_"):] for c in manifest.columns if c.startswith("label_")]
    picked = pd.concat([manifest[manifest["modality"].isin(["CR", "DX"]) & (manifest["image_path"] != "")
                                 & (manifest["note_text"] != "")].head(3),
                        manifest[manifest["note_text"] == ""].head(1)])
    picked = picked.assign(image_path=[str(TINY / p) if p else "" for p in picked["image_path"]])
    subset = root / "manifest.csv"
    picked.to_csv(subset, index=False)
    config = demo_config()
    config.data.labels = labels
    model = build_model(config, labels)
    ckpt = save_checkpoint(root / "ckpt", model=model, config=config, labels=labels,
                           calibration=[LabelCalibration(threshold=0.5) for _ in labels],
                           scope={"modalities": ["CR", "DX"], "views": [], "body_parts": []},
                           model_card={"name": "clinmm-e2e-untrained", "intended_use": "browser test only",
                                       "limitations": ["untrained weights"]},
                           reference={})
    score(subset, ckpt, root / "scores", options=ScoreOptions(workers=0, batch_size=4))
    return {"root": root, "ckpt": ckpt, "scores": root / "scores", "manifest": subset}


@dataclass
class Server:
    url: str
    db_url: str
    process: subprocess.Popen
    log: Path


@pytest.fixture()
def dashboard_server(e2e_inputs: dict[str, Path], tmp_path: Path) -> Iterator[Server]:
    """``clinmm dashboard``'s exact command (safe flags) on a free localhost port."""
    from clinmm.dashboard_launch import build_command

    port = _free_port()
    db_url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    command = build_command(scores=e2e_inputs["scores"], model=e2e_inputs["ckpt"], manifest=e2e_inputs["manifest"],
                            db_url=db_url, port=port, python=sys.executable)
    log = tmp_path / "streamlit.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    break
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            pytest.fail(f"streamlit exited early:\n{log.read_text()}")
    else:
        process.terminate()
        pytest.fail(f"streamlit did not become healthy:\n{log.read_text()}")
    try:
        yield Server(url=url, db_url=db_url, process=process, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture()
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by chromedriver (Selenium)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    require_tool(bool(chromium and driver_bin), "Debian chromium + chromium-driver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800",
                 "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    try:
        yield driver
    finally:
        driver.quit()
