"""DICOM SR output (read back, dciodvfy, dsr2html), drift on the generator's shifted site, and PHI canaries."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from pathlib import Path

import pydicom
import pyarrow.parquet as pq
import pytest

from clinmm.score import ScoreOptions, score

from .conftest import LABELS, require_tool

CANARY = "CANARY^PHI"
CANARY_ID = "CANARYPHIID77"
CANARY_ACCESSION = "CANARYACC991"
CANARY_DATE = "19120304"
CANARIES = (CANARY, "CANARY", CANARY_ID, CANARY_ACCESSION, CANARY_DATE)


def _manifest(tiny_data: Path, out: Path, keep) -> Path:
    with (tiny_data / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    chosen = [r for r in rows if keep(r)]
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in chosen:
            w.writerow(dict(r, image_path=str((tiny_data / r["image_path"]).resolve()) if r["image_path"] else ""))
    return out


@pytest.fixture(scope="module")
def sr_run(tiny_data, tiny_checkpoint, salt_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sr")
    counter = iter(range(1000))
    m = _manifest(tiny_data, tmp / "m.csv",
                  lambda r: r["modality"] in ("CR", "DX") and r["image_path"] and next(counter) < 4)
    out = tmp / "out"
    score(m, tiny_checkpoint, out, options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file, sr=True))
    return out


def test_sr_read_back_with_codes_and_probabilities(sr_run, tiny_data):
    import highdicom as hd

    table = pq.read_table(sr_run / "predictions.parquet").to_pylist()
    assert len(table) == 4
    for row in table:
        path = sr_run / "sr" / f"{row['study_key']}.dcm"
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
        text = str(ds)
        assert "233604007" in text and "Pneumonia" in text  # SNOMED CT finding code
        # the reference to the source image (the file the model read) is in the SR
        source = pydicom.dcmread(tiny_data / next(r for r in _rows(tiny_data) if r["study_id"] == row["study_id"])[
            "image_path"], stop_before_pixels=True)
        assert source.SOPInstanceUID in text
        assert ds.StudyInstanceUID == source.StudyInstanceUID  # filed with its study in PACS
        report = hd.sr.MeasurementReport.from_sequence([ds])
        groups = report.get_image_measurement_groups()
        assert [g.finding_type.meaning for g in groups] == ["Nodule", "Lung consolidation", "Fever", "Dyspnea",
                                                             "Pneumonia"]
        for lab, g in zip(LABELS, groups):
            assert float(g.get_measurements()[0].value) == pytest.approx(row[f"prob_{lab}"], abs=1e-6)
            value = g.get_qualitative_evaluations()[0].value
            assert value.value == ("52101004" if row[f"decision_{lab}"] else "2667000")  # Present / Absent


def _rows(tiny_data: Path) -> list[dict]:
    with (tiny_data / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_sr_valid_per_dciodvfy_and_rendered_by_dsr2html(sr_run, tmp_path):
    dciodvfy = require_tool("dciodvfy")
    dsr2html = require_tool("dsr2html")
    files = sorted((sr_run / "sr").glob("*.dcm"))
    assert files
    for f in files:
        res = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
        assert not errors, errors
        html = tmp_path / (f.stem + ".html")
        res = subprocess.run([dsr2html, str(f), str(html)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        page = html.read_text(errors="replace")
        assert "Pneumonia" in page and "Measurement Group" in page and ("Present" in page or "Absent" in page)


def test_drift_shifted_site_is_clearly_higher(tiny_data, tiny_checkpoint, salt_file, tmp_path):
    """Reference: train-split site_a/site_b. Held-out site_a/site_b studies vs site_c (gamma 0.7, gain, offset)."""
    in_dist = _manifest(tiny_data, tmp_path / "ab.csv", lambda r: r["split"] != "train" and r["site"] in (
        "site_a", "site_b") and r["modality"] in ("CR", "DX"))
    shifted = _manifest(tiny_data, tmp_path / "c.csv",
                        lambda r: r["site"] == "site_c" and r["modality"] in ("CR", "DX"))
    opts = ScoreOptions(workers=0, device="cpu", salt_file=salt_file)
    score(in_dist, tiny_checkpoint, tmp_path / "o_ab", options=opts)
    score(shifted, tiny_checkpoint, tmp_path / "o_c", options=opts)
    d_ab = json.loads((tmp_path / "o_ab" / "drift.json").read_text())
    d_c = json.loads((tmp_path / "o_c" / "drift.json").read_text())
    assert d_c["level"] == "major" and d_ab["level"] in ("stable", "moderate")
    assert d_c["input_shift"] > 1.0 and d_c["input_shift"] > 3 * d_ab["input_shift"]
    assert d_c["drift_score"] > 2 * d_ab["drift_score"]


def _canary_folder(tiny_data: Path, dst: Path) -> Path:
    """Synthetic CR/DX files re-labelled with canary PHI, one truncated copy, one SR-like unsupported object."""
    rows = [r for r in _rows(tiny_data) if r["modality"] in ("CR", "DX") and r["image_path"]][:3]
    for i, r in enumerate(rows):
        ds = pydicom.dcmread(tiny_data / r["image_path"])
        ds.PatientName, ds.PatientID, ds.AccessionNumber = CANARY, CANARY_ID, CANARY_ACCESSION + str(i)
        ds.StudyDate = ds.PatientBirthDate = CANARY_DATE
        ds.StudyDescription = CANARY + " study"
        ds.InstitutionName = CANARY + " hospital"
        ds.ReferringPhysicianName = CANARY
        ds.save_as(dst / f"img{i}", enforce_file_format=True)
    data = (dst / "img0").read_bytes()
    (dst / "broken").write_bytes(data[: len(data) // 2])
    ds = pydicom.dcmread(dst / "img1")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
    ds.save_as(dst / "other", enforce_file_format=True)
    with (dst.parent / "notes.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["study_instance_uid", "accession_number", "note_text"])
        w.writerow(["", CANARY_ACCESSION + "0", "Fever and cough for three days."])
    return dst


def test_phi_canaries_absent_from_outputs_and_logs(tiny_data, tiny_checkpoint, salt_file, tmp_path, caplog, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    _canary_folder(tiny_data, folder)
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        summary = score(folder, tiny_checkpoint, out,
                        options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file, explain=True,
                                             notes=tmp_path / "notes.csv", progress=True))
    captured = capfd.readouterr()
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    assert sum(r["note_present"] for r in table) == 1  # the note joined by the (canary) accession number
    errors = list(csv.DictReader((out / "errors.csv").open()))
    assert {e["status"] for e in errors} >= {"truncated", "unsupported_sop_class"}
    assert summary.exit_code == 3
    texts = {p.relative_to(out).as_posix(): p.read_bytes().decode("latin-1") for p in out.rglob("*")
             if p.is_file() and "sr" not in p.relative_to(out).parts}
    texts["<logs>"] = caplog.text
    texts["<stderr>"] = captured.err + captured.out
    for name, text in texts.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary!r} leaked into {name}"
