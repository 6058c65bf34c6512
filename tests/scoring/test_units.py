"""Unit checks of the scoring helpers: PSI, drift report, length bucketing, scope rule, atomic shard store, decode
worker threads."""

from __future__ import annotations

import numpy as np
import pytest

from clinmm.scoring.drift import MIN_PSI_N, drift_report, population_stability_index
from clinmm.scoring.outputs import ShardStore
from clinmm.scoring.pipeline import ScopeRule


def test_psi_zero_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=2000)
    same = population_stability_index(ref, rng.normal(size=2000))
    small = population_stability_index(ref, rng.normal(0.3, 1, size=2000))
    big = population_stability_index(ref, rng.normal(2.0, 1, size=2000))
    assert same < 0.02 < small < 0.25 < big
    assert population_stability_index(ref, []) is None


def test_drift_report_small_batch_uses_smd_not_psi():
    rng = np.random.default_rng(1)
    ref = {"intensity": {k: list(rng.normal(100, 10, 200)) for k in ("mean", "std", "p05", "p95")},
           "scores": {"a": list(rng.uniform(size=200))}, "modalities_present": {"image": 1.0, "note": 0.9}}
    n = MIN_PSI_N - 1
    cur = [{k: float(v) for k in ("mean", "std", "p05", "p95")} for v in rng.normal(150, 10, n)]
    rep = drift_report(ref, labels=["a"], probs=rng.uniform(size=(n, 1)), intensity=cur, image_present=[True] * n,
                       note_present=[True] * n)
    assert rep["intensity"]["mean"]["psi"] is None and rep["intensity"]["mean"]["smd"] == pytest.approx(5, abs=1)
    assert rep["level"] == "major" and rep["drift_score"] > 1
    cur = [{k: float(v) for k in ("mean", "std", "p05", "p95")} for v in rng.normal(100, 10, 300)]
    rep = drift_report(ref, labels=["a"], probs=rng.uniform(size=(300, 1)), intensity=cur, image_present=[True] * 300,
                       note_present=[True] * 300)
    assert rep["level"] == "stable" and rep["intensity"]["mean"]["psi"] is not None


def test_scope_rule_blank_is_not_a_violation():
    rule = ScopeRule.from_checkpoint({"modalities": ["CR", "dx"], "views": ["PA"], "body_parts": []})
    assert rule.violations("DX", "", "") == []
    assert rule.violations("CT", "LL", "CHEST") == ["modality:CT", "view:LL"]


def test_shard_store_is_atomic_and_fingerprinted(tmp_path):
    store = ShardStore(tmp_path)
    (store.root / ".tmp-shard-00000-1").mkdir(parents=True)
    assert store.clean_partial() == 1
    store.write(0, fingerprint_="abc", rows=[{"x": 0.1 + 0.2}], errors=[], stats=[{"image_stats": None}])
    assert store.is_done(0, "abc") and not store.is_done(0, "other") and not store.is_done(1, "abc")
    rows, errors, stats = store.read(0)
    assert rows == [{"x": 0.1 + 0.2}] and errors == [] and stats == [{"image_stats": None}]  # floats round-trip
    assert not list(store.root.glob(".tmp-*"))


def test_clean_partial_removes_half_written_files_left_by_a_kill(tmp_path):
    from clinmm.scoring.outputs import atomic_write_text

    out = tmp_path / "out"
    atomic_write_text(out / "sr" / "abc.dcm", "finished")
    (out / "sr" / ".abc2.dcm.tmp7558").write_bytes(b"")  # what a SIGKILL during a write leaves
    (out / ".predictions.csv.tmp12").write_bytes(b"half")
    (out / "shards" / ".tmp-shard-00001-99").mkdir(parents=True)
    (out / "sr" / ".hidden-but-not-ours.dcm").write_bytes(b"keep")
    assert ShardStore(out).clean_partial() == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "sr/.hidden-but-not-ours.dcm", "sr/abc.dcm"]


def test_output_lock_refuses_a_second_writer_and_frees_on_exit(tmp_path):
    from clinmm.errors import ScoringError
    from clinmm.scoring.outputs import output_lock

    with output_lock(tmp_path):
        with pytest.raises(ScoringError, match="another clinmm process"):
            with output_lock(tmp_path):
                pass
    with output_lock(tmp_path):  # released: a later run may take it
        pass


class _ThreadsPerStudy:
    """StudyChunks stand-in: a DataLoader worker dies on its first chunk (as with a crashing C decoder); the
    fallback's guarded workers then "decode" each study into the torch thread count they run with."""

    def __init__(self, n: int) -> None:
        from types import SimpleNamespace

        self.chunks = [[SimpleNamespace(index=i)] for i in range(n)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int):
        import os

        os._exit(1)

    def _decode(self, study) -> int:
        import torch

        return torch.get_num_threads()


def test_decode_workers_run_one_torch_thread_after_a_worker_crash():
    """The fallback's workers are forked from the scoring process (all its torch threads) and must drop to one."""
    import torch

    from clinmm.scoring.pipeline import iter_decoded

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what the model uses on a 2-core machine; a forked worker inherits it
    try:
        threads = list(iter_decoded(_ThreadsPerStudy(3), workers=2, file_timeout_s=5.0))
    finally:
        torch.set_num_threads(before)
    assert threads == [1, 1, 1]
