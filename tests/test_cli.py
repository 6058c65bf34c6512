"""The CLI is thin: it parses, calls the library, and maps clinmm errors to exit code 2 with a clear message."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from clinmm.cli import app

runner = CliRunner()


def test_help_lists_the_public_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("sample-data", "train", "score", "report", "dashboard", "info", "inspect", "demo"):
        assert name in result.output


def test_info_json_reports_versions_decoders_and_text_model() -> None:
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["versions"]["torch"] != "not installed"
    assert info["text_model"].endswith("model")
    syntaxes = {row["uid"]: row for row in info["dicom_decoders"]}
    assert syntaxes["1.2.840.10008.1.2.1"]["available"]  # explicit VR little endian always decodes


def test_train_with_bad_config_exits_2_naming_key_and_file(tmp_path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("fusion:\n  methd: concat\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text("study_id,patient_id,split,image_path,note_text,label_a\n")
    result = runner.invoke(app, ["train", "--manifest", str(manifest), "--out", str(tmp_path / "ck"),
                                 "--config", str(cfg)])
    assert result.exit_code == 2
    assert "methd" in result.output and "bad.yaml" in result.output


def test_train_with_missing_manifest_exits_2(tmp_path) -> None:
    result = runner.invoke(app, ["train", "--demo", "--manifest", str(tmp_path / "none.csv"), "--out",
                                 str(tmp_path / "ck")])
    assert result.exit_code == 2
    assert "none.csv" in result.output and "not found" in result.output
