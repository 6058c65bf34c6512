"""Fusion ablation: the paired patient bootstrap behaves, and ``compare`` runs end to end on the tiny set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clinmm_tiny import tiny_config

from clinmm.compare import compare, paired_bootstrap_delta

TINY = Path(__file__).parents[2] / "sample_data" / "tiny" / "manifest.csv"


def test_paired_bootstrap_delta():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    pid = np.repeat(np.arange(150), 2)
    y = np.repeat(rng.integers(0, 2, 150), 2).astype(float)  # patient-level labels
    good = y + rng.normal(0, 0.6, 300)
    bad = y + rng.normal(0, 2.0, 300)
    same = paired_bootstrap_delta(y, good, good, pid, n_boot=200)
    assert same["delta"] == 0 and same["lower_95_one_sided"] == 0
    better = paired_bootstrap_delta(y, good, bad, pid, n_boot=500)
    assert better["delta"] > 0.1 and better["lower_95_one_sided"] > 0
    assert better["ci95"][0] <= better["lower_95_one_sided"] <= better["delta"] <= better["ci95"][1]
    y_nan = y.copy()
    y_nan[:10] = np.nan
    assert paired_bootstrap_delta(y_nan, good, bad, pid, n_boot=50)["n"] == 290


@pytest.mark.skipif(not TINY.is_file(), reason="sample_data/tiny is not in this checkout")
def test_compare_end_to_end(tmp_path, tiny_text_dir):
    cfg = tiny_config(tiny_text_dir, epochs=1, batch_size=8)
    cfg.fusion.head_stack = True  # every method's stack is fitted on validation, as `clinmm train` fits it
    result = compare(TINY, tmp_path, config=cfg, methods=("cross_attention", "image_only", "text_only"),
                     n_boot=50, progress=False, text_cache_file=tmp_path / "text.safetensors")
    from clinmm.models.text import TextEncoder
    from clinmm.models.text_cache import FrozenTextCache, encoder_fingerprint

    tag = encoder_fingerprint(TextEncoder.from_config(cfg.text))
    assert FrozenTextCache().load(tmp_path / "text.safetensors", tag=tag) > 0  # the shared pass, for the next run
    assert FrozenTextCache().load(tmp_path / "text.safetensors") == 0  # not for another encoder
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["methods"]) == {"cross_attention", "image_only", "text_only"}
    for m in saved["methods"].values():
        assert set(m["test_auroc"]) == set(result.labels)
    assert "fused_vs_single:pneumonia" in result.checks and "notes_removed:nodule" in result.checks
    assert "images_removed:fever" in result.checks
    table = (tmp_path / "ablation.md").read_text()
    assert "| cross_attention |" in table and "PASS" in table or "FAIL" in table
    assert (tmp_path / "cross_attention_ckpt" / "manifest.json").is_file()
    from clinmm.checkpoint import load_checkpoint

    loaded = load_checkpoint(tmp_path / "cross_attention_ckpt")  # a normal, verifiable checkpoint
    assert loaded.model.head_stack is not None and bool(loaded.model.head_stack.fitted)


@pytest.mark.skipif(not TINY.is_file(), reason="sample_data/tiny is not in this checkout")
def test_compare_over_seeds_resumes(tmp_path, tiny_text_dir):
    from clinmm.compare_pool import compare_over_seeds

    cfg = tiny_config(tiny_text_dir, epochs=1, batch_size=8)
    trio = ("cross_attention", "image_only", "text_only")
    pooled = compare_over_seeds(TINY, tmp_path, config=cfg, seeds=[3, 4], methods=trio, n_boot=50, progress=False)
    assert pooled.methods["cross_attention"]["seeds"] == [3, 4] and set(pooled.per_seed_checks) == {"3", "4"}
    for s in (3, 4):
        assert json.loads((tmp_path / f"seed_{s}" / "results.json").read_text())["setup"]["seed"] == s
    assert (tmp_path / "pooled.md").is_file()
    stamp = (tmp_path / "seed_3" / "results.json").stat().st_mtime_ns
    (tmp_path / "seed_4" / "results.json").unlink()  # as if seed 4 had been interrupted
    again = compare_over_seeds(TINY, tmp_path, config=cfg, seeds=[3, 4], methods=trio, n_boot=50, progress=False)
    assert (tmp_path / "seed_3" / "results.json").stat().st_mtime_ns == stamp  # a finished seed is kept
    assert again.methods["text_only"]["seeds"] == [3, 4]
