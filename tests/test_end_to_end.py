"""The whole slice through the public CLI on a small generated set: sample-data → train → score → report.

Real DICOM, the real offline MiniLM, a real (tiny) MONAI backbone; small sizes keep it to about a minute.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from clinmm.cli import app

runner = CliRunner()


def _ok(result, code: int = 0) -> None:
    assert result.exit_code == code, result.output + (repr(result.exception) if result.exception else "")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    _ok(runner.invoke(app, ["sample-data", str(data), "--studies", "60", "--seed", "11"]))
    cfg = root / "tiny.yaml"
    cfg.write_text(
        "data:\n  image_size: 64\n"
        "image:\n  backbone: densenet_tiny\n"
        "text:\n  max_length: 64\n  stride: 16\n  freeze_layers: 6\n"
        "fusion:\n  dim: 64\n  heads: 4\n"
        "train:\n  epochs: 2\n  batch_size: 16\n  patience: 0\n"
    )
    ckpt = root / "ckpt"
    _ok(runner.invoke(app, ["train", "--manifest", str(data / "manifest.csv"), "--out", str(ckpt), "--config",
                            str(cfg)]))
    return root, data, ckpt


def test_checkpoint_is_self_describing(trained) -> None:
    _, _, ckpt = trained
    for name in ("model.safetensors", "config.json", "labels.json", "model_card.json", "reference.json",
                 "versions.json", "manifest.json", "text_encoder/config.json"):
        assert (ckpt / name).is_file(), name
    labels = json.loads((ckpt / "labels.json").read_text())
    assert labels["labels"] == ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
    assert all(0.0 <= c["threshold"] <= 1.0 for c in labels["calibration"])


def test_score_manifest_and_folder(trained) -> None:
    root, data, ckpt = trained
    out = root / "scores"
    result = runner.invoke(app, ["score", str(data / "manifest.csv"), "--model", str(ckpt), "--out", str(out),
                                 "--workers", "0", "--salt-file", str(root / "salt")])
    assert result.exit_code in (0, 3), result.output
    preds = pd.read_parquet(out / "predictions.parquet")
    manifest = pd.read_csv(data / "manifest.csv")
    assert len(preds) == len(manifest)
    scored = preds[preds["status"] == "ok"]
    assert len(scored) > 0
    for lab in ("nodule", "pneumonia"):
        assert scored[f"prob_{lab}"].between(0, 1).all()
    assert (out / "errors.csv").is_file() and (out / "predictions.csv").is_file()
    # A folder of DICOM (no manifest) scores too, grouped by StudyInstanceUID.
    folder = root / "scores_folder"
    result = runner.invoke(app, ["score", str(data / "dicom"), "--model", str(ckpt), "--out", str(folder),
                                 "--notes", str(data / "notes.csv"), "--workers", "0", "--salt-file",
                                 str(root / "salt")])
    assert result.exit_code in (0, 3), result.output
    assert len(pd.read_parquet(folder / "predictions.parquet")) > 0


def test_report_html(trained) -> None:
    root, data, ckpt = trained
    out = root / "report.html"
    _ok(runner.invoke(app, ["report", "--model", str(ckpt), "--manifest", str(data / "manifest.csv"), "--split",
                            "test", "--out", str(out), "--n-boot", "200"]))
    html = out.read_text()
    assert "AUROC" in html and "<img" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # self-contained
