"""PHI canary: identifying values planted in DICOM files never reach an output file, a log line or an error.

Files carry CANARY values in PatientName / PatientID / AccessionNumber / dates / descriptions / institution, and in
an over-long value that makes pydicom's validator complain (its warning would quote the value). They go through
``inspect`` (library, worker processes and CLI), ``load_image`` and every error path. The scoring engineer extends
this to ``clinmm score``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_factory import CANARY, CANARY_ACCESSION, CANARY_DATE, CANARY_ID, ct_series, make_dataset, write
from pydicom.encaps import encapsulate
from typer.testing import CliRunner

from clinmm.errors import IngestError
from clinmm.io.inspect import inspect_folder
from clinmm.io.load import load_image
from clinmm.io.provenance import write_provenance

CANARIES = ("CANARY", CANARY_ID, CANARY_ACCESSION, CANARY_DATE, "1912-03-04", "PHI")


def _plant(folder: Path) -> dict[str, str]:
    """Write one file per outcome; returns name → expected status."""
    expected = {}
    img = np.arange(256, dtype=np.uint16).reshape(16, 16)
    dx = make_dataset(img, modality="DX", sop_class=pydicom.uid.DigitalXRayImageStorageForPresentation,
                      SeriesDescription=CANARY, PerformingPhysicianName=CANARY, OperatorsName=CANARY,
                      PatientComments=CANARY, StudyTime="101010", ContentDate=CANARY_DATE, ViewPosition="PA")
    # malformed values in fields ingestion reads (a UID, a description): pydicom's validator warns when it converts
    # them and its message quotes the value
    saved = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        dx.add_new(0x0020000D, "UI", "1.2.826.0.1." + CANARY_ID)  # StudyInstanceUID
        dx.add_new(0x00101010, "AS", CANARY_ID)  # PatientAge
        write(dx, folder / "ok_dx")
    finally:
        pydicom.config.settings.reading_validation_mode = saved
    expected["ok_dx"] = "ok"
    ds = make_dataset(img)
    ds.PixelData = ds.PixelData[:50]
    write(ds, folder / "truncated")
    expected["truncated"] = "truncated"
    ds = make_dataset(img)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"
    ds.PixelData = encapsulate([b"\x00" * 64])
    write(ds, folder / "nodecoder")
    expected["nodecoder"] = "no_decoder"
    write(make_dataset(img, sop_class=pydicom.uid.RTDoseStorage), folder / "rtdose")
    expected["rtdose"] = "unsupported_sop_class"
    write(make_dataset(img, BitsAllocated=12), folder / "badbits")
    expected["badbits"] = "bad_header"
    ds = make_dataset(img)
    del ds.PixelData
    write(ds, folder / "nopixels")
    expected["nopixels"] = "no_pixel_data"
    ds = make_dataset(img)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])  # a broken JPEG 2000 codestream
    write(ds, folder / "corrupt_j2k")
    expected["corrupt_j2k"] = "decode_error"
    (folder / "notes.txt").write_text(f"{CANARY} {CANARY_ID}")  # not DICOM, holds PHI: must not be echoed
    expected["notes.txt"] = "not_dicom"
    ct_series(folder / "series", n=3)
    for k in range(3):
        expected[f"series/slice_{k:03d}.dcm"] = "ok"
    return expected


def _assert_clean(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary!r} leaked into {where}"


def test_canary_never_leaves_ingestion(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "in"
    data.mkdir()
    expected = _plant(data)
    capfd.readouterr()  # pydicom's own warnings while *writing* the planted files are not ingestion output
    caplog.clear()
    out = tmp_path / "out"

    summary = inspect_folder(data, out_csv=out / "inspect.csv", workers=2, progress=True, salt=b"c" * 32)
    assert {r.path: r.status for r in summary.rows} == expected

    runner = CliRunner()
    from clinmm.cli import app

    result = runner.invoke(app, ["inspect", str(data), "--out", str(out / "cli.csv"), "--workers", "2", "-v",
                                 "--salt-file", str(tmp_path / "salt")])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output

    errors = []
    for name in expected:
        try:
            vol = load_image(data / name)
            (out / "meta").mkdir(parents=True, exist_ok=True)
            (out / "meta" / f"{name.replace('/', '_')}.txt").write_text(repr(vol.meta))
            write_provenance(vol.provenance, out / "prov" / f"{name.replace('/', '_')}.json")
        except IngestError as err:
            errors.append(f"{err} | {err.detail} | {err.status} | {err!r}")
    assert len(errors) == sum(1 for s in expected.values() if s != "ok")
    vol = load_image(data / "series")
    (out / "series_meta.txt").write_text(repr(vol.meta) + repr(vol.provenance))

    captured = capfd.readouterr()
    _assert_clean(captured.out + captured.err, "stdout/stderr (incl. worker processes)")
    _assert_clean(result.output, "CLI output")
    _assert_clean("\n".join(r.getMessage() for r in caplog.records), "log records")
    _assert_clean("\n".join(errors), "exceptions")
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) >= 8
    for path in files:
        _assert_clean(path.read_text(errors="replace"), str(path.relative_to(out)))
