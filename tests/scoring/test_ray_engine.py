"""``--engine ray`` on a local Ray instance gives the same rows as the local engine (slow: Ray start-up)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from clinmm.score import ScoreOptions, score

from .conftest import require_module

pytestmark = pytest.mark.slow


def test_ray_rows_equal_local(tiny_data, tiny_checkpoint, salt_file, tmp_path):
    require_module("ray", "ray")
    common = dict(notes=tiny_data / "notes.csv", device="cpu", batch_size=4, shard_size=16, salt_file=salt_file,
                  workers=1)
    local = score(tiny_data / "dicom", tiny_checkpoint, tmp_path / "local", options=ScoreOptions(**common))
    ray_ = score(tiny_data / "dicom", tiny_checkpoint, tmp_path / "ray", options=ScoreOptions(engine="ray", **common))
    a = pq.read_table(tmp_path / "local" / "predictions.parquet").to_pylist()
    b = pq.read_table(tmp_path / "ray" / "predictions.parquet").to_pylist()
    assert len(a) == len(b) == local.studies == ray_.studies
    assert local.exit_code == ray_.exit_code
    for x, y in zip(a, b):
        assert x["study_key"] == y["study_key"] and x["status"] == y["status"] and x["source_path"] == y["source_path"]
        for k in x:
            if k.startswith("prob_"):
                assert (x[k] is None) == (y[k] is None)
                if x[k] is not None:
                    assert x[k] == pytest.approx(y[k], abs=1e-5)
            elif k.startswith("decision_") or k in ("n_files", "n_files_ok", "image_present", "note_present",
                                                    "provenance"):
                assert x[k] == y[k], k
    assert (tmp_path / "local" / "errors.csv").read_bytes() == (tmp_path / "ray" / "errors.csv").read_bytes()
