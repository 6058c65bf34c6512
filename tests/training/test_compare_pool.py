"""Pooling fusion-ablation runs over training seeds: seed-mean AUROC, checks on it, and refusals of runs that differ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clinmm.cli import app
from clinmm.compare import paired_bootstrap_delta
from clinmm.compare_pool import pool_compare_runs
from clinmm.errors import CompareError
from clinmm.metrics import known_auroc

LABELS = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
IMAGE, TEXT = [0, 1], [2, 3]


def _data(n: int = 160):
    rng = np.random.default_rng(0)
    pids = np.array([f"P{i // 2:03d}" for i in range(n)])  # two studies per patient
    y = rng.integers(0, 2, (n, len(LABELS))).astype(float)
    y[:5, 2] = np.nan  # unknown labels are skipped
    return y, pids


def _scores(y: np.ndarray, method: str, seed: int, mode: str) -> np.ndarray:
    """Noisy scores: each single-modality model sees only its labels; the fused model sees both (and pneumonia)."""
    rng = np.random.default_rng([seed, ("cross_attention", "image_only", "text_only").index(method),
                                 ("full", "no_text", "no_image").index(mode)])
    signal = np.nan_to_num(y)
    sees = {"cross_attention": [0, 1, 2, 3, 4], "image_only": [0, 1, 4], "text_only": [2, 3]}[method]
    if mode == "no_text" or method == "image_only":
        sees = [c for c in sees if c not in TEXT]
    if mode == "no_image" or method == "text_only":
        sees = [c for c in sees if c not in IMAGE]
    weight = np.zeros(len(LABELS))
    weight[sees] = 1.0 + 0.3 * seed
    if method == "cross_attention" and mode == "full":
        weight[4] *= 2.0
    return signal * weight + rng.normal(0, 1.0, signal.shape)


def _run(folder: Path, *, seed: int, methods: tuple[str, ...], y: np.ndarray, pids: np.ndarray,
         config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    for m in methods:
        np.savez_compressed(folder / f"predictions_{m}.npz", y=y, patient=pids,
                            **{mode: _scores(y, m, seed, mode) for mode in ("full", "no_text", "no_image")})
    cfg = config or {"train": {"seed": seed, "epochs": 40}, "fusion": {"dim": 128, "text_relevance_rollout": 0.25}}
    results = {"labels": LABELS, "methods": {m: {"train_seconds": 10.0 + seed} for m in methods},
               "setup": {"seed": seed, "config": cfg}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_one_seed_gives_the_single_run_checks(tmp_path):
    y, pids = _data()
    run = _run(tmp_path / "s0", seed=0, methods=("cross_attention", "image_only", "text_only"), y=y, pids=pids)
    pooled = pool_compare_runs([run], n_boot=300)
    for c, lab in enumerate(LABELS):
        best = "text_only" if c in TEXT else "image_only"
        want = paired_bootstrap_delta(y[:, c], _scores(y, "cross_attention", 0, "full")[:, c],
                                      _scores(y, best, 0, "full")[:, c], pids, n_boot=300)
        got = pooled.checks[f"fused_vs_single:{lab}"]
        assert got["best_single"] == best
        assert got["delta"] == pytest.approx(want["delta"], abs=1e-12)
        assert got["lower_95_one_sided"] == pytest.approx(want["lower_95_one_sided"], abs=1e-12)
    assert pooled.per_seed_checks["0"] == pooled.checks
    assert np.isnan(pooled.methods["cross_attention"]["test_auroc"]["fever"]["sd"])  # one seed: no spread


def test_two_seeds_split_over_folders(tmp_path):
    y, pids = _data()
    runs = [_run(tmp_path / "s0", seed=0, methods=("cross_attention", "image_only", "text_only"), y=y, pids=pids),
            _run(tmp_path / "s1", seed=1, methods=("cross_attention", "text_only"), y=y, pids=pids),
            _run(tmp_path / "s1_img", seed=1, methods=("image_only",), y=y, pids=pids)]
    pooled = pool_compare_runs(runs, tmp_path / "pool", n_boot=300)
    assert pooled.methods["image_only"]["seeds"] == [0, 1]
    fused = [known_auroc(y[:, 3], _scores(y, "cross_attention", s, "full")[:, 3]) for s in (0, 1)]
    text = [known_auroc(y[:, 3], _scores(y, "text_only", s, "full")[:, 3]) for s in (0, 1)]
    entry = pooled.methods["cross_attention"]["test_auroc"]["dyspnea"]
    assert entry["per_seed"] == pytest.approx(fused) and entry["sd"] == pytest.approx(np.std(fused, ddof=1))
    check = pooled.checks["fused_vs_single:dyspnea"]
    assert check["delta"] == pytest.approx(np.mean(fused) - np.mean(text), abs=1e-12)
    assert check["ci95"][0] <= check["lower_95_one_sided"] <= check["ci95"][1]
    dropped = pooled.methods["cross_attention"]["test_auroc_no_image"]["dyspnea"]["mean"]
    assert pooled.checks["images_removed:dyspnea"]["delta"] == pytest.approx(dropped - np.mean(fused))
    assert set(pooled.per_seed_checks) == {"0", "1"}  # seed 1 is complete across its two folders
    saved = json.loads((tmp_path / "pool" / "pooled.json").read_text())
    assert saved["checks"]["fused_vs_single:pneumonia"]["pass"] == pooled.checks["fused_vs_single:pneumonia"]["pass"]
    table = [r for r in (tmp_path / "pool" / "pooled.md").read_text().splitlines() if r.startswith("| ")]
    assert len({r.replace("\\|", "").count("|") for r in table if "check" in r or "_removed:" in r}) == 1


def test_seed_rows_average_auroc_not_scores():
    y, pids = _data()
    a, b = _scores(y, "cross_attention", 0, "full")[:, 0], _scores(y, "image_only", 0, "full")[:, 0]
    one = paired_bootstrap_delta(y[:, 0], a, b, pids, n_boot=200)
    twice = paired_bootstrap_delta(y[:, 0], np.stack([a, a]), np.stack([b, b]), pids, n_boot=200)
    assert {k: v for k, v in twice.items() if k != "ci95"} == pytest.approx({k: v for k, v in one.items()
                                                                           if k != "ci95"})
    assert twice["ci95"] == pytest.approx(one["ci95"])
    mixed = paired_bootstrap_delta(y[:, 0], np.stack([a, -a]), b, pids, n_boot=50)  # mean AUROC, not mean score
    assert mixed["delta"] == pytest.approx(0.5 - known_auroc(y[:, 0], b), abs=1e-9)


def test_runs_that_differ_are_refused(tmp_path):
    y, pids = _data()
    trio = ("cross_attention", "image_only", "text_only")
    base = _run(tmp_path / "a", seed=0, methods=trio, y=y, pids=pids)
    other_y = y.copy()
    other_y[7, 0] = 1 - np.nan_to_num(other_y[7, 0])
    with pytest.raises(CompareError, match="test studies differ"):
        pool_compare_runs([base, _run(tmp_path / "b", seed=1, methods=trio, y=other_y, pids=pids)])
    # a run made before a configuration key existed pools with one that stores the key at its default
    # (and explanation-only settings may differ: the image relevance carried back by occlusion)
    newer = {"train": {"seed": 5, "epochs": 40, "flip_axes": []},
             "fusion": {"dim": 128, "text_relevance_rollout": 0.25, "image_relevance_carry": "occlusion",
                        "image_relevance_carry_subcells": 2, "image_relevance_carry_permutations": 8}}
    later = _run(tmp_path / "n", seed=5, methods=trio, y=y, pids=pids, config=newer)
    assert pool_compare_runs([base, later], n_boot=20).methods["text_only"]["seeds"] == [0, 5]
    flipped = {"train": {"seed": 6, "epochs": 40, "flip_axes": [1]}, "fusion": {"dim": 128}}
    with pytest.raises(CompareError, match="train.flip_axes"):
        pool_compare_runs([base, _run(tmp_path / "m", seed=6, methods=trio, y=y, pids=pids, config=flipped)])
    cfg = {"train": {"seed": 2, "epochs": 20}, "fusion": {"dim": 128}}
    with pytest.raises(CompareError, match="train.epochs"):
        pool_compare_runs([base, _run(tmp_path / "c", seed=2, methods=trio, y=y, pids=pids, config=cfg)])
    # a setting only cross_attention reads may differ from the baselines' runs, not between cross_attention runs
    pooled_cfg = {"train": {"seed": 3, "epochs": 40}, "fusion": {"dim": 128, "note_pool": True}}
    fused_only = _run(tmp_path / "f", seed=3, methods=("cross_attention",), y=y, pids=pids, config=pooled_cfg)
    baselines = _run(tmp_path / "g", seed=0, methods=("image_only", "text_only"), y=y, pids=pids)
    assert pool_compare_runs([baselines, fused_only], n_boot=20).methods["cross_attention"]["seeds"] == [3]
    with pytest.raises(CompareError, match="cross_attention's configuration differs .* fusion.note_pool"):
        pool_compare_runs([base, fused_only], n_boot=20)
    variant = pool_compare_runs([base, fused_only], n_boot=20, skip=[f"{base}:cross_attention"])
    assert variant.methods["cross_attention"]["seeds"] == [3] and variant.methods["image_only"]["seeds"] == [0]
    with pytest.raises(CompareError, match="not FOLDER:METHOD"):
        pool_compare_runs([base], skip=["elsewhere:text_only"])
    with pytest.raises(CompareError, match="seed 0 is also in"):
        pool_compare_runs([base, _run(tmp_path / "d", seed=0, methods=("text_only",), y=y, pids=pids)])
    with pytest.raises(CompareError, match="no run of image_only"):
        pool_compare_runs([_run(tmp_path / "e", seed=0, methods=("cross_attention", "text_only"), y=y, pids=pids)])
    with pytest.raises(CompareError, match="no results.json"):
        pool_compare_runs([tmp_path / "missing"])
    (tmp_path / "a" / "predictions_text_only.npz").unlink()
    with pytest.raises(CompareError, match="predictions_text_only.npz is missing"):
        pool_compare_runs([base])


def test_cli_compare_pool(tmp_path):
    y, pids = _data()
    run = _run(tmp_path / "s0", seed=0, methods=("cross_attention", "image_only", "text_only"), y=y, pids=pids)
    res = CliRunner().invoke(app, ["compare-pool", str(run), "--out", str(tmp_path / "pool"), "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    assert "fused_vs_single:pneumonia" in res.output and (tmp_path / "pool" / "pooled.md").is_file()
    res = CliRunner().invoke(app, ["compare-pool", str(tmp_path / "nothing"), "--out", str(tmp_path / "p2")])
    assert res.exit_code == 2 and "no results.json" in res.output
