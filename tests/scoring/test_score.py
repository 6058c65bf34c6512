"""End-to-end scoring on a small synthetic set: outputs, statuses, scope, resume after a crash, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clinmm.score import EXIT_INCOMPLETE, EXIT_OK, ScoreOptions, score

from .conftest import LABELS


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def folder_run(tiny_data, tiny_checkpoint, salt_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "out"
    summary = score(tiny_data / "dicom", tiny_checkpoint, out,
                    options=ScoreOptions(notes=tiny_data / "notes.csv", workers=0, device="cpu", batch_size=4,
                                         shard_size=10, salt_file=salt_file, explain=True))
    return out, summary


def test_folder_outputs(folder_run, tiny_data):
    out, summary = folder_run
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    rows = _read_csv(out / "predictions.csv")
    manifest = _read_csv(tiny_data / "manifest.csv")
    with_image = [m for m in manifest if m["image_path"]]
    assert len(table) == len(rows) == len(with_image) == summary.studies  # one row per study found on disk
    assert [r["study_key"] for r in rows] == [t["study_key"] for t in table]
    assert len({r["study_key"] for r in rows}) == len(rows)
    cols = list(rows[0])
    for lab in LABELS:
        assert f"prob_{lab}" in cols and f"decision_{lab}" in cols
    for c in ("study_key", "source_path", "status", "image_present", "note_present", "n_files", "n_files_ok",
              "model_sha256", "clinmm_version", "preprocessing_hash", "provenance"):
        assert c in cols
    assert "study_id" not in cols  # folder input: no manifest ids
    ct = {m["image_path"].split("/")[2] for m in manifest if m["modality"] == "CT"}
    for t in table:
        assert len(t["study_key"]) == 24
        if t["modality"] == "CT":  # the checkpoint's scope is CR/DX
            assert t["status"] == "out_of_scope" and t["prob_nodule"] is None and "modality:CT" in t["scope"]
        else:
            assert t["status"] == "ok" and 0.0 <= t["prob_nodule"] <= 1.0
            assert t["decision_nodule"] == int(t["prob_nodule"] >= 0.5)
            prov = json.loads(t["provenance"])
            assert prov["files"] and all(not f.startswith("/") for f in prov["files"])
    assert sum(t["modality"] == "CT" for t in table) == len(ct)
    notes_present = sum(bool(m["note_text"]) for m in with_image)
    assert sum(t["note_present"] for t in table if t["status"] == "ok") == sum(
        bool(m["note_text"]) for m in with_image if m["modality"] != "CT")
    assert notes_present >= 1
    errors = _read_csv(out / "errors.csv")
    assert {e["status"] for e in errors} == {"out_of_scope"}
    assert len(errors) == len(ct)
    assert summary.exit_code == EXIT_INCOMPLETE
    drift = json.loads((out / "drift.json").read_text())
    assert set(drift["scores"]) == set(LABELS) and drift["drift_score"] is not None
    run = json.loads((out / "run.json").read_text())
    assert "started" in run and run["summary"]["studies"] == summary.studies
    ok = [t for t in table if t["status"] == "ok"]
    exp = json.loads((out / "explanations" / f"{ok[0]['study_key']}.json").read_text())
    assert np.array(exp["image_attention"]).shape[0] == len(LABELS)
    assert exp["probs"] == pytest.approx([ok[0][f"prob_{lab}"] for lab in LABELS], abs=1e-6)


def test_rerun_is_idempotent_and_byte_identical(folder_run, tiny_data, tiny_checkpoint, salt_file):
    out, summary = folder_run
    before = _files(out)
    again = score(tiny_data / "dicom", tiny_checkpoint, out,
                  options=ScoreOptions(notes=tiny_data / "notes.csv", workers=0, device="cpu", batch_size=4,
                                       shard_size=10, salt_file=salt_file, explain=True))
    assert again.shards_reused == again.shards == summary.shards
    assert _files(out) == before


def test_crash_then_resume_is_byte_identical(folder_run, tiny_data, tiny_checkpoint, salt_file, tmp_path,
                                             monkeypatch):
    """A run that dies after two shards (one half-written), resumed, ends with the bytes of an uninterrupted run."""
    import clinmm.score as score_mod
    from clinmm.scoring import outputs

    reference, _ = folder_run
    out = tmp_path / "out"
    opts = ScoreOptions(notes=tiny_data / "notes.csv", workers=2, device="cpu", batch_size=4, shard_size=10,
                        salt_file=salt_file, explain=True)
    real_write = outputs.ShardStore.write
    calls = {"n": 0}

    def dying_write(self, index, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # leave a half-built temp shard behind, as a kill -9 would
            (self.root / f".tmp-shard-{index:05d}-999").mkdir(parents=True)
            (self.root / f".tmp-shard-{index:05d}-999" / "rows.jsonl").write_text("{partial")
            raise KeyboardInterrupt
        return real_write(self, index, **kw)

    monkeypatch.setattr(outputs.ShardStore, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        score_mod.score(tiny_data / "dicom", tiny_checkpoint, out, options=opts)
    assert not (out / "predictions.parquet").exists()
    monkeypatch.setattr(outputs.ShardStore, "write", real_write)
    resumed = score_mod.score(tiny_data / "dicom", tiny_checkpoint, out, options=opts)
    assert resumed.shards_reused == 2
    assert _files(out) == _files(reference)


def test_manifest_input_and_exit_codes(folder_run, tiny_data, tiny_checkpoint, salt_file, tmp_path):
    rows = _read_csv(tiny_data / "manifest.csv")
    keep = [r for r in rows if r["modality"] in ("CR", "DX", "")][:12]
    path = tmp_path / "m.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in keep:
            r = dict(r, image_path=str((tiny_data / r["image_path"]).resolve()) if r["image_path"] else "")
            w.writerow(r)
    out = tmp_path / "out"
    summary = score(path, tiny_checkpoint, out, options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file))
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    assert [t["study_id"] for t in table] == [r["study_id"] for r in keep]
    assert all(t["status"] == "ok" for t in table)
    no_image = [t for t in table if not t["image_present"]]
    assert all(t["n_files"] == 0 and t["note_present"] for t in no_image)
    assert summary.exit_code == EXIT_OK and _read_csv(out / "errors.csv") == []
    # the same studies from the folder run carry the same keys (keys come from StudyInstanceUID either way)
    folder_out, folder = folder_run
    fk = {t["source_path"].split("/")[1]: t for t in pq.read_table(folder_out / "predictions.parquet").to_pylist()}
    for t in table:
        if t["image_present"]:
            f = fk[t["study_id"]]
            assert f["study_key"] == t["study_key"]
            assert f["prob_fever"] == pytest.approx(t["prob_fever"], abs=1e-5)
    assert folder.exit_code == EXIT_INCOMPLETE


def test_force_scope_scores_ct(tiny_data, tiny_checkpoint, salt_file, tmp_path):
    rows = _read_csv(tiny_data / "manifest.csv")
    path = tmp_path / "ct.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            if r["modality"] == "CT":
                w.writerow(dict(r, image_path=str((tiny_data / r["image_path"]).resolve())))
    summary = score(path, tiny_checkpoint, tmp_path / "o",
                    options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file, force_scope=True))
    table = pq.read_table(tmp_path / "o" / "predictions.parquet").to_pylist()
    ct = [t for t in table if t["modality"] == "CT"]
    assert ct and all(t["prob_nodule"] is not None and "modality:CT" in t["scope"] for t in ct)
    assert summary.not_scored == 0


def test_usage_errors(tiny_checkpoint, tmp_path, salt_file):
    from clinmm.errors import ClinmmError

    with pytest.raises(ClinmmError, match="input not found"):
        score(tmp_path / "nope", tiny_checkpoint, tmp_path / "o", options=ScoreOptions(salt_file=salt_file))
    (tmp_path / "in").mkdir()
    with pytest.raises(ClinmmError, match="engine"):
        score(tmp_path / "in", tiny_checkpoint, tmp_path / "o", options=ScoreOptions(engine="spark",
                                                                                      salt_file=salt_file))


def test_manifest_split_scores_only_that_split(tiny_data, tiny_checkpoint, salt_file, tmp_path):
    from clinmm.errors import ClinmmError

    rows = _read_csv(tiny_data / "manifest.csv")
    expected = [r["study_id"] for r in rows if r["split"] == "test"]
    assert 0 < len(expected) < len(rows)
    out = tmp_path / "out"
    score(tiny_data / "manifest.csv", tiny_checkpoint, out,
          options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file, split="test", force_scope=True))
    assert [t["study_id"] for t in pq.read_table(out / "predictions.parquet").to_pylist()] == expected
    with pytest.raises(ClinmmError, match="no row has split 'holdout'"):
        score(tiny_data / "manifest.csv", tiny_checkpoint, tmp_path / "o2",
              options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file, split="holdout"))
    with pytest.raises(ClinmmError, match="only a manifest INPUT has splits"):
        score(tiny_data / "dicom", tiny_checkpoint, tmp_path / "o3",
              options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file, split="test"))


def test_explain_with_a_carried_checkpoint_writes_the_finer_map(tiny_data, tiny_checkpoint, salt_file, tmp_path):
    """A checkpoint with a healthy reference (``fusion.image_relevance_carry``, demo configuration: sub-cells 2)
    writes the image relevance carried back, on a grid twice as fine as the tokens' and says so
    (``image_relevance_grid``); that the carry keeps each label's sum is tested in tests/explain/test_occlusion.py."""
    import torch

    from clinmm.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    assert loaded.config.fusion.image_relevance_carry_subcells == 2
    model = loaded.model
    torch.manual_seed(2)
    model.healthy_reference.copy_(torch.rand_like(model.healthy_reference))
    model.healthy_reference_count.fill_(20)
    ckpt = tmp_path / "carried"
    save_checkpoint(ckpt, model=model, config=loaded.config, labels=loaded.labels, calibration=loaded.calibration,
                    scope=loaded.scope, model_card=loaded.model_card, reference=loaded.reference)
    out = tmp_path / "out"
    score(tiny_data / "dicom", ckpt, out, options=ScoreOptions(notes=tiny_data / "notes.csv", workers=0,
                                                              device="cpu", batch_size=4, shard_size=10,
                                                              salt_file=salt_file, explain=True))
    table = [t for t in pq.read_table(out / "predictions.parquet").to_pylist() if t["status"] == "ok"]
    assert table
    for t in table[:5]:
        exp = json.loads((out / "explanations" / f"{t['study_key']}.json").read_text())
        if not exp["image_present"]:
            continue
        grid = exp["image_grid"]
        assert exp["image_relevance_grid"] == [2 * grid[0], 2 * grid[1]]
        rel = np.array(exp["image_relevance"])  # (C, 2h, 2w)
        assert rel.shape == (len(LABELS), 2 * grid[0], 2 * grid[1])
        assert np.isfinite(rel).all() and np.abs(rel).sum() > 0
