"""Salted keys, provenance round trip, Annex E de-identification, decoder table."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from io_factory import CANARY, CANARY_ACCESSION, CANARY_DATE, CANARY_ID, ct_series, make_dataset

from clinmm.errors import ClinmmError, ConfigError
from clinmm.io.decoders import decoder_for, decoder_table
from clinmm.io.deid import deidentified_meta, deidentify_dataset
from clinmm.io.keys import load_or_create_salt, study_key
from clinmm.io.load import load_image
from clinmm.io.provenance import read_provenance, write_provenance


def test_salt_created_once_with_0600_and_keys_stable(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "salt"
    salt = load_or_create_salt(path)
    assert len(salt) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_salt(path) == salt  # stable across runs
    key = study_key("1.2.3.4", salt=salt)
    assert key == study_key("1.2.3.4 ", salt=salt) == study_key("1.2.3.4\x00", salt=salt)
    assert len(key) == 24 and "1.2.3.4" not in key
    assert study_key("1.2.3.4", salt=load_or_create_salt(tmp_path / "other")) != key
    assert study_key("1.2.3.5", salt=salt) != key


def test_bad_salt_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "salt").write_text("zz-not-hex")
    with pytest.raises(ConfigError, match="salt"):
        load_or_create_salt(tmp_path / "salt")
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(ConfigError, match="at least 16"):
        load_or_create_salt(tmp_path / "short")
    with pytest.raises(ValueError):
        study_key("1.2", salt=b"short")


def test_provenance_round_trip(tmp_path: Path) -> None:
    ct_series(tmp_path / "s", n=3)
    vol = load_image(tmp_path / "s", salt=b"k" * 32)
    prov = vol.provenance
    assert prov.files == ["slice_000.dcm", "slice_001.dcm", "slice_002.dcm"]
    assert prov.transforms[0] == "rescale" and prov.pydicom_version and prov.clinmm_version
    assert prov.transfer_syntaxes == ["1.2.840.10008.1.2.1"] and len(prov.series_key) == 24
    path = write_provenance(prov, tmp_path / "out" / "provenance.json")
    assert read_provenance(path) == prov
    data = json.loads(path.read_text())
    data["surprise"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ClinmmError, match="surprise"):
        read_provenance(path)


def test_deidentified_meta_keeps_display_fields_only() -> None:
    ds = make_dataset(np.zeros((4, 4), dtype=np.uint16), BodyPartExamined="CHEST", ViewPosition="PA",
                      Manufacturer="ACME", SeriesDescription=CANARY)
    meta = deidentified_meta(ds)
    assert meta["Modality"] == "CT" and meta["BodyPartExamined"] == "CHEST" and meta["ViewPosition"] == "PA"
    assert meta["Rows"] == 4 and meta["Manufacturer"] == "ACME"
    text = json.dumps(meta)
    for canary in (CANARY, "CANARY", CANARY_ID, CANARY_ACCESSION, CANARY_DATE):
        assert canary not in text
    assert "StudyDescription" not in meta and "SeriesDescription" not in meta  # Annex E removes them


def test_deidentify_dataset_applies_the_basic_profile() -> None:
    ds = make_dataset(np.zeros((4, 4), dtype=np.uint16))
    ds.add_new(0x00091001, "LO", "private")
    out = deidentify_dataset(ds)
    assert str(ds.PatientName) == CANARY  # source untouched
    assert CANARY not in str(out.get("PatientName", "")) and CANARY_ID not in str(out.get("PatientID", ""))
    assert CANARY_ACCESSION not in str(out.get("AccessionNumber", ""))
    assert out.StudyInstanceUID != ds.StudyInstanceUID
    assert CANARY not in str(out.get("InstitutionName", "")) and CANARY_DATE not in str(out.get("StudyDate", ""))
    assert 0x00091001 not in out  # private tags removed
    assert out.PixelData == ds.PixelData
    assert "PixelData" not in deidentify_dataset(ds, keep_pixels=False)


def test_decoder_table() -> None:
    rows = decoder_table()
    by_uid = {r["uid"]: r for r in rows}
    assert by_uid["1.2.840.10008.1.2.1"]["available"] and by_uid["1.2.840.10008.1.2.1"]["plugins"] == "native"
    assert by_uid["1.2.840.10008.1.2.4.90"]["available"]  # JPEG 2000 through pylibjpeg-openjpeg / gdcm
    assert "pylibjpeg" in by_uid["1.2.840.10008.1.2.4.50"]["plugins"]
    assert not by_uid["1.2.840.10008.1.2.4.100"]["available"]  # MPEG-2: no decoder
    assert decoder_for("1.2.840.10008.1.2.4.92") == (False, ())
    assert set(rows[0]) == {"uid", "name", "available", "plugins"}
