"""Dashboard logic without Streamlit: worklist filters, case sources, model info, rendering, uploads."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dashboards.case_result import remap_spans, remap_words, scrub_note, stored_result
from dashboards.data import (
    DataError,
    case_source,
    feedback_cases,
    filter_worklist,
    load_model_info,
    load_scores,
    worklist_counts,
)
from dashboards.render import apply_window, window_presets
from dashboards.uploads import UploadError, staged_upload


def test_scores_counts_and_filters(scores_dir: Path) -> None:
    table = load_scores(scores_dir)
    assert table.labels == ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
    counts = worklist_counts(table)
    assert (counts["studies"], counts["missing_note"], counts["missing_image"], counts["not_ok"]) == (6, 1, 2, 1)
    df = table.predictions
    assert counts["positive_fever"] == int((df["decision_fever"] == 1).sum())
    pos = filter_worklist(df, label="fever", decision="positive")
    assert (pos["decision_fever"] == 1).all() and len(pos) == counts["positive_fever"]
    both = filter_worklist(df, missing="none", status="ok")
    assert sorted(both["study_id"]) == ["s000", "s001", "s002"]
    ordered = filter_worklist(df, label="nodule", sort_desc=False)["prob_nodule"].tolist()
    assert ordered == sorted(ordered)
    assert counts["unlike_training"] == 1
    assert filter_worklist(df, usual="unlike")["study_id"].tolist() == ["s002"]
    assert "s002" not in filter_worklist(df, usual="usual")["study_id"].tolist()
    stored = stored_result(df.set_index("study_id").loc["s002"].to_dict(), table.labels)
    assert stored.check.codes == ["intensity:std", "grid:rows"]
    assert stored_result(df.set_index("study_id").loc["s001"].to_dict(), table.labels).check is None


def test_missing_predictions_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no predictions.parquet"):
        load_scores(tmp_path)


def test_case_source_uses_manifest_from_run_json(scores_dir: Path) -> None:
    table = load_scores(scores_dir)
    key = table.predictions.set_index("study_id").loc["s001", "study_key"]
    source = case_source(table, key)
    assert source.image_path is not None and source.image_path.is_file()
    assert "Fever to 38.1" in source.note_text and source.identified["patient_id"] == "p001"
    assert source.subgroups["sex"] == "F"
    no_image = case_source(table, table.predictions.set_index("study_id").loc["s004", "study_key"])
    assert no_image.image_path is None
    with pytest.raises(DataError, match="not in"):
        case_source(table, "nope")
    cases = feedback_cases(table, keys=[key])
    assert cases[0]["image_path"].startswith("/") and cases[0]["patient_id"] == "p001"


def test_model_info_reads_thresholds_and_sha(checkpoint_dir: Path) -> None:
    info = load_model_info(checkpoint_dir)
    assert info.name == "clinmm-test-card" and info.sha256 == "ef" * 32
    assert info.thresholds == pytest.approx({"nodule": 0.3, "consolidation": 0.4, "fever": 0.5, "dyspnea": 0.6,
                                             "pneumonia": 0.7})
    assert info.display_version.startswith("clinmm-test-card") and "efefef" in info.display_version
    (checkpoint_dir / "labels.json").write_text("{not json")
    with pytest.raises(DataError, match="labels.json: not valid JSON"):
        load_model_info(checkpoint_dir)


def test_stored_result_table() -> None:
    row = {"prob_a": 0.9, "decision_a": 1, "prob_b": 0.1, "decision_b": 0, "image_present": False}
    result = stored_result(row, ["a", "b"], {"a": 0.5})
    table = result.table()
    assert table[0]["decision"] == "positive" and table[1]["probability"] == pytest.approx(0.1)
    assert np.isnan(table[1]["threshold"]) and not result.image_present and result.source == "stored"


def test_window_and_presets() -> None:
    pixels = np.linspace(-1000, 1000, 100, dtype=np.float32).reshape(1, 10, 10)
    out = apply_window(pixels[0], center=0, width=1000)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert out[0, 0] == 0 and out[-1, -1] == 255
    names = [p.name for p in window_presets(pixels, "CT")]
    assert names[0].startswith("Auto") and "Lung" in names
    assert "Lung" not in [p.name for p in window_presets(pixels, "CR")]


def test_note_is_scrubbed_for_display() -> None:
    note = "Seen by Dr. Jones on 12/03/2024, phone 555-123-4567. Fever since Monday."
    shown = scrub_note(note)
    assert "Jones" not in shown and "12/03/2024" not in shown and "Fever since Monday." in shown
    assert scrub_note("") == ""


def test_remap_spans_after_scrubbing() -> None:
    original = "Seen by Dr Smith on 2024-01-02. Fever and cough."
    scrubbed = "Seen by [NAME] on [DATE]. Fever and cough."
    fever = original.index("Fever")
    spans = remap_spans(original, scrubbed, [(fever, fever + 5, 0.9), (11, 16, 0.5)])
    assert [(scrubbed[s:e], w) for s, e, w in spans] == [("Fever", 0.9)]  # the name span is dropped
    from clinmm.explain.attention import WordScore

    words = [WordScore(11, 16, "Smith", 0.5, 1.0), WordScore(fever, fever + 5, "Fever", 0.9, 2.0)]
    moved = remap_words(original, scrubbed, words)
    assert [(w.text, scrubbed[w.start:w.end], w.heat) for w in moved] == [("Fever", "Fever", 2.0)]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_uploads_are_staged_privately_and_deleted() -> None:
    with staged_upload("x.dcm", b"DICM-bytes") as staged:
        folder = staged.folder
        assert staged.image_path.read_bytes() == b"DICM-bytes"
        assert (folder.stat().st_mode & 0o077) == 0  # private to the dashboard's user
    assert not folder.exists()
    with staged_upload("series.zip", _zip({"a/1.dcm": b"1", "a/2.dcm": b"2"})) as staged:
        assert sorted(p.read_bytes() for p in staged.image_path.iterdir()) == [b"1", b"2"]
        folder = staged.folder
    assert not folder.exists()
    with pytest.raises(UploadError, match="unsafe path"), staged_upload("evil.zip", _zip({"../../etc/x": b"1"})):
        pass
    with pytest.raises(UploadError, match="not a valid zip"), staged_upload("bad.zip", b"not a zip"):
        pass
    with pytest.raises(UploadError, match="empty"), staged_upload("x.dcm", b""):
        pass
