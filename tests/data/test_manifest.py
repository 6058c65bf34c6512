"""Manifest reading: schema checks, relative paths, unknown labels, notes from files."""

from __future__ import annotations

import math

import pytest

from clinmm.data.manifest import read_manifest
from clinmm.errors import ManifestError

HEADER = "study_id,patient_id,split,image_path,note_text,label_a,label_b,sex\n"


def test_reads_labels_paths_and_subgroups(tmp_path) -> None:
    (tmp_path / "m.csv").write_text(HEADER + 'S1,P1,train,img/1.dcm,"No fever.",1,,F\nS2,P2,val,,,0,1,M\n')
    m = read_manifest(tmp_path / "m.csv")
    assert m.labels == ["a", "b"]
    s1, s2 = m.records
    assert s1.image_path == tmp_path / "img/1.dcm" and s1.note_text == "No fever."
    assert s1.labels[0] == 1 and math.isnan(s1.labels[1])  # blank = unknown
    assert s2.image_path is None and s2.note_text is None
    assert s1.extra == {"sex": "F"}
    assert [r.study_id for r in m.split("val")] == ["S2"]


def test_note_path_column(tmp_path) -> None:
    (tmp_path / "n1.txt").write_text("Febrile since Monday.")
    (tmp_path / "m.csv").write_text("study_id,patient_id,split,image_path,note_path,label_a\nS1,P1,train,,n1.txt,1\n")
    assert read_manifest(tmp_path / "m.csv").records[0].note_text == "Febrile since Monday."


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("study_id,split,image_path,note_text,label_a\nS1,train,,,1\n", "missing column(s) ['patient_id']"),
        ("study_id,patient_id,split,image_path,label_a\nS1,P,train,,1\n", "note_text or note_path"),
        (HEADER + "S1,P1,train,,,2,,F\n", "row 2, column label_a: expected 1, 0 or blank, got '2'"),
        ("study_id,patient_id,split,image_path,note_text\nS1,P,train,,\n", "no label_<finding> columns"),
    ],
)
def test_errors_name_file_row_and_column(tmp_path, text: str, needle: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / "m.csv")
    assert needle in str(info.value) and "m.csv" in str(info.value)


def test_requested_label_must_exist(tmp_path) -> None:
    (tmp_path / "m.csv").write_text(HEADER + "S1,P1,train,,,1,0,F\n")
    assert read_manifest(tmp_path / "m.csv", labels=["b"]).labels == ["b"]
    with pytest.raises(ManifestError, match="label_zzz"):
        read_manifest(tmp_path / "m.csv", labels=["zzz"])
