"""Every file of pydicom's test data and of pydicom-data gets a status; what pydicom decodes, clinmm decodes."""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from pathlib import Path

import pydicom

from clinmm.errors import IngestError
from clinmm.io.dicom import ALLOWED_SOP_CLASSES, read_dicom
from clinmm.io.inspect import inspect_folder
from clinmm.io.status import Status

STATUSES = {s.value for s in Status}


def _pydicom_decodes(path: Path) -> tuple[bool, str]:
    """Reference: strict dcmread (no force) then pixel_array with the installed plugins; returns (ok, SOP class)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
            ds.pixel_array
        return True, sop
    except Exception:
        return False, ""


def _walk(root: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, files in os.walk(root) for f in files)


def _check_corpus(root: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    mismatches = []
    for path in _walk(root):
        try:
            read_dicom(path)
            status, detail = Status.OK.value, ""
        except IngestError as err:
            status, detail = err.status, err.detail
        assert status in STATUSES, (path, status)
        counts[status] += 1
        if status in (Status.OK.value, Status.UNSUPPORTED_SOP_CLASS.value):
            # ok implies an allow-listed SOP class and unsupported_sop_class one outside it: nothing to compare.
            continue
        decodes, sop = _pydicom_decodes(path)
        if decodes:
            expected = Status.OK.value if sop in ALLOWED_SOP_CLASSES else Status.UNSUPPORTED_SOP_CLASS.value
            if status != expected:
                mismatches.append((path.name, status, detail, expected))
    assert not mismatches, mismatches
    return counts


def test_every_pydicom_test_file_gets_a_status(test_files: Path) -> None:
    counts = _check_corpus(test_files)
    logging.getLogger(__name__).info("pydicom test_files: %s", dict(counts))
    print("pydicom test_files status counts:", dict(sorted(counts.items())))
    assert sum(counts.values()) == len(_walk(test_files))
    assert counts[Status.OK.value] >= 70  # the corpus holds ~80 decodable images


def test_every_pydicom_data_file_gets_a_status(data_files: Path) -> None:
    counts = _check_corpus(data_files)
    print("pydicom-data status counts:", dict(sorted(counts.items())))
    assert sum(counts.values()) == len(_walk(data_files))
    assert counts[Status.OK.value] >= 50


def test_inspect_through_workers_matches_in_process(test_files: Path, tmp_path: Path) -> None:
    """The guarded worker path gives the same statuses as the in-process reader (a subset to stay fast)."""
    names = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_truncated.dcm", "rtplan.dcm", "rtdose.dcm",
             "README.txt", "JPEG-lossy.dcm", "SC_rgb_rle.dcm", "MR_small_RLE.dcm"]
    for name in names:
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes((test_files / name).read_bytes())
    summary = inspect_folder(tmp_path / "in", workers=2, progress=False, out_csv=tmp_path / "rows.csv")
    by_name = {r.path: r.status for r in summary.rows}
    for name in names:
        try:
            read_dicom(tmp_path / "in" / name)
            expected = "ok"
        except IngestError as err:
            expected = err.status
        assert by_name[name] == expected, name
    assert summary.n_files == len(names)
    assert (tmp_path / "rows.csv").read_text().count("\n") == len(names) + 1
