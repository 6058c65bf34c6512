"""``clinmm train`` end to end on the committed tiny DICOM set: checkpoint, metrics log, ``--resume`` with more
epochs continues after the saved epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from clinmm_tiny import tiny_config
from typer.testing import CliRunner

from clinmm.cli import app

TINY = Path(__file__).parents[2] / "sample_data" / "tiny" / "manifest.csv"


@pytest.mark.skipif(not TINY.is_file(), reason="sample_data/tiny is not in this checkout")
def test_train_then_resume_more_epochs(tmp_path, tiny_text_dir):
    from clinmm.config import config_to_dict

    cfg = config_to_dict(tiny_config(tiny_text_dir, epochs=1, batch_size=8))
    cfg["data"]["labels"] = []
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ckpt"
    runner = CliRunner()
    args = ["train", "--manifest", str(TINY), "--out", str(out), "--config", str(tmp_path / "tiny.yaml"),
            "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout[first.stdout.index("{"):])
    assert summary["best_epoch"] == 1 and summary["resumed_from_epoch"] == 0
    assert (out / "manifest.json").is_file() and (out / ".train_state" / "state.json").is_file()
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"] and float(rows[0]["train_loss"]) > 0

    again = runner.invoke(app, args + ["--resume", "--epochs", "2"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout[again.stdout.index("{"):])
    assert summary["resumed_from_epoch"] == 1
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]

    from clinmm.checkpoint import load_checkpoint

    loaded = load_checkpoint(out)
    assert loaded.model_card["training"]["epochs_run"] == 2

    changed = dict(cfg, train={**cfg["train"], "lr_head": 0.5})
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(changed))
    bad = runner.invoke(app, ["train", "--manifest", str(TINY), "--out", str(out), "--config",
                              str(tmp_path / "other.yaml"), "--no-progress", "--resume", "--epochs", "3"])
    assert bad.exit_code == 2 and "different configuration" in bad.output
