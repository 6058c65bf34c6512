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


def _train_tiny(tmp_path, tiny_text_dir, *, fusion: dict) -> Path:
    """One epoch of ``clinmm train`` on the tiny set with these fusion settings → the checkpoint directory."""
    from clinmm.config import config_to_dict

    cfg = config_to_dict(tiny_config(tiny_text_dir, epochs=1, batch_size=8))
    cfg["data"]["labels"] = []
    cfg["fusion"].update(fusion)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(app, ["train", "--manifest", str(TINY), "--out", str(out), "--config",
                                      str(tmp_path / "tiny.yaml"), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.skipif(not TINY.is_file(), reason="sample_data/tiny is not in this checkout")
def test_train_fits_the_head_stack_on_validation(tmp_path, tiny_text_dir):
    """With ``fusion.head_stack`` the training run fits the stack on the validation split before calibration, and
    the checkpoint carries it (weights and the model card's record). The tiny set's 7 validation studies hold too
    few positives for most labels: those stay the fusion head alone, and the card says so (None)."""
    from clinmm.checkpoint import load_checkpoint

    out = _train_tiny(tmp_path, tiny_text_dir, fusion={"head_stack": True})
    loaded = load_checkpoint(out)
    stack = loaded.model.head_stack
    assert stack is not None and bool(stack.fitted)
    record = loaded.model_card["head_stack"]["coefficients"]
    assert set(record) == {"both", "no_image", "no_text"}
    for pattern, labels in record.items():
        assert set(labels) == set(loaded.labels)
        for c, label in enumerate(loaded.labels):
            p = ["both", "no_image", "no_text"].index(pattern)
            if labels[label] is None:  # identity
                assert float(stack.weight[p, c, 0]) == 1.0 and float(stack.weight[p, c, 1:].abs().sum()) == 0
            else:
                assert abs(float(stack.weight[p, c, 0]) - labels[label]["fusion"]) < 1e-3


@pytest.mark.skipif(not TINY.is_file(), reason="sample_data/tiny is not in this checkout")
def test_train_fits_the_healthy_reference_for_occlusion_carry(tmp_path, tiny_text_dir, monkeypatch):
    """With ``fusion.image_relevance_carry: occlusion`` the training run stores the mean of its healthy training
    images' content in the checkpoint (the tiny set has fewer healthy studies than the floor of 16, so the floor is
    lowered here), and the model card says how many studies it averages."""
    import functools

    import numpy as np

    import clinmm.train as train_module
    from clinmm.checkpoint import load_checkpoint
    from clinmm.data.manifest import read_manifest
    from clinmm.explain.occlusion import fit_healthy_reference
    from clinmm.inference import Predictor

    monkeypatch.setattr(train_module, "fit_healthy_reference", functools.partial(fit_healthy_reference, min_studies=1))
    out = _train_tiny(tmp_path, tiny_text_dir, fusion={"image_relevance_carry": "occlusion"})
    man = read_manifest(TINY)
    healthy = sum(1 for r in man.split("train") if np.all(np.asarray(r.labels, float) == 0))
    assert healthy >= 1
    loaded = load_checkpoint(out)
    assert int(loaded.model.healthy_reference_count) == healthy == loaded.model_card["healthy_reference"]["studies"]
    assert float(loaded.model.healthy_reference.abs().sum()) > 0
    assert Predictor(loaded).carries_image_relevance
