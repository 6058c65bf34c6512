"""Layer 2: `clinmm report` on a real (untrained, real-format) checkpoint and real synthetic DICOM + notes."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Real model inference (three passes: fused, note removed, image removed) over 60 studies: minutes on 2 busy cores.
pytestmark = pytest.mark.slow

LABELS = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]


@pytest.fixture(scope="module")
def data_and_checkpoint(tmp_path_factory):
    import torch

    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import build_model, save_checkpoint
    from clinmm.config import demo_config
    from clinmm.data.synthetic.generate import SyntheticOptions, generate_sample_data

    root = tmp_path_factory.mktemp("build")
    data = root / "data"
    generate_sample_data(data, studies=60, seed=3, options=SyntheticOptions(image_size=64))
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    manifest["split"] = "test"  # evaluate every generated study
    manifest.loc[0, "image_path"] = "dicom/does_not_exist.dcm"  # an ingestion failure with a note -> note-only
    manifest.to_csv(data / "manifest.csv", index=False)
    torch.manual_seed(0)
    cfg = demo_config()
    cfg.data.image_size = 64
    cfg.text.max_length = 32
    cfg.text.stride = 8
    cfg.text.max_chunks = 4
    model = build_model(cfg, LABELS).eval()
    ckpt = root / "ckpt"
    save_checkpoint(ckpt, model=model, config=cfg, labels=LABELS,
                    calibration=[LabelCalibration(method="temperature", temperature=2.0, threshold=0.5)
                                 for _ in LABELS],
                    scope={"modalities": ["CR", "DX"]}, reference={},
                    model_card={"intended_use": "test only", "limitations": ["untrained weights"]})
    torch.manual_seed(1)  # a second, differently initialised checkpoint for --compare
    other = root / "other_model"
    save_checkpoint(other, model=build_model(cfg, LABELS).eval(), config=cfg, labels=LABELS,
                    calibration=[LabelCalibration(threshold=0.5) for _ in LABELS],
                    scope={"modalities": ["CR", "DX"]}, reference={}, model_card={"intended_use": "test only"})
    return data / "manifest.csv", ckpt, other


def test_cli_report_end_to_end(data_and_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from clinmm.cli import app

    manifest, ckpt, _ = data_and_checkpoint
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--model", str(ckpt), "--manifest", str(manifest), "--split", "test",
                                      "--out", str(out), "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["labels"] == LABELS and data["n_boot"] == 50
    assert data["ingestion_flow"]["split_studies"] == 60
    assert data["ingestion_flow"]["included"] == data["n_studies"]
    m = pd.read_csv(manifest, dtype=str, keep_default_na=False).iloc[1:]  # row 0's image file does not exist
    ct = int(((m["modality"] == "CT") & (m["image_path"] != "")).sum())
    assert data["ingestion_flow"]["excluded"].get("out_of_scope (modality:CT)", 0) == ct > 0
    assert data["ingestion_flow"]["included"] + ct == 60
    assert data["ingestion_flow"]["patients of this split also in other splits"] == 0
    assert "torch" in json.dumps(data["model_card"]["software_versions"])
    assert set(data["comparators"]) == {"image_only", "text_only"}
    assert "missing-modality" in data["comparators"]["image_only"]
    groups = {g["group"]: g["n_studies"] for g in data["by_modality"]}
    assert sum(groups.values()) == data["n_studies"] and groups.get("note_only", 0) >= 1
    assert {g["variable"] for g in data["subgroups"]} == {"sex", "age_band", "site"}
    # calibration before (sigmoid of logits) and after (temperature 2) differ
    cal = data["calibration"][0]
    assert cal["before"]["brier"] != cal["after"]["brier"]
    assert data["failure_cases"] and any(f["thumbnail_png"] for f in data["failure_cases"])
    assert "untrained weights" in " ".join(data["limitations"])
    assert out.stat().st_size < 10 * 1024 * 1024 and "data:image/png;base64," in html


def test_cli_report_unknown_split_is_a_usage_error(data_and_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from clinmm.cli import app

    manifest, ckpt, _ = data_and_checkpoint
    result = CliRunner().invoke(app, ["report", "--model", str(ckpt), "--manifest", str(manifest), "--split", "nope",
                                      "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert "no studies in split 'nope'" in result.output


def test_build_report_with_compare_checkpoint(data_and_checkpoint, tmp_path):
    from clinmm.report.validation import build_report

    manifest, ckpt, other = data_and_checkpoint
    out = build_report(ckpt, manifest, split="test", out=tmp_path / "r.html", compare=(other,), n_boot=20)
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["comparators"]) == {"image_only", "text_only", "other_model"}
    assert "separate checkpoint other_model" in data["comparators"]["other_model"]
    pairs = {(c["model_a"], c["model_b"]) for c in data["comparisons"]}
    assert ("fused", "other_model") in pairs and len(pairs) == 6
    tested = [c for c in data["comparisons"] if c["model_b"] == "other_model" and c["result"]]
    assert tested and all(0.0 <= c["result"]["p_value"] <= 1.0 for c in tested)
