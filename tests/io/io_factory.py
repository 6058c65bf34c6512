"""Helpers for clinmm.io tests: where pydicom's test corpora live, and a small DICOM factory."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CANARY = "CANARY^PHI"
CANARY_ID = "CANARYPHIID77"
CANARY_ACCESSION = "CANARYACC991"
CANARY_DATE = "19120304"


def pydicom_test_files() -> Path:
    """pydicom's own test data folder (inside the installed package; walked directly, never get_testdata_files)."""
    return Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_data_files() -> Path | None:
    """pydicom-data's ``data_store/data`` folder, found from the installed package (None when not installed)."""
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    return path if path.is_dir() else None


def make_dataset(
    pixels: np.ndarray,
    *,
    sop_class: str = pydicom.uid.CTImageStorage,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    bits_stored: int | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    position: tuple[float, float, float] | None = None,
    orientation: tuple[float, ...] | None = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.5, 0.5),
    phi: bool = True,
    **attrs: Any,
) -> Dataset:
    """A valid single-frame DICOM dataset (Explicit VR Little Endian) around ``pixels`` (H, W) or (H, W, 3)."""
    arr = np.asarray(pixels)
    colour = arr.ndim == 3
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    if phi:
        ds.PatientName = CANARY
        ds.PatientID = CANARY_ID
        ds.AccessionNumber = CANARY_ACCESSION
        ds.StudyDate = CANARY_DATE
        ds.PatientBirthDate = CANARY_DATE
        ds.StudyDescription = CANARY + " study"
        ds.InstitutionName = CANARY + " hospital"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelSpacing = list(spacing)
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_series(
    folder: Path,
    *,
    n: int = 6,
    gap: float = 2.5,
    shape: tuple[int, int] = (16, 16),
    study_uid: str | None = None,
    names: Callable[[int], str] | None = None,
    **attrs: Any,
) -> list[Path]:
    """Write an axial CT series of ``n`` slices (slice k filled with 100*k + pattern) with IPP z = k * gap."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 50, size=shape).astype(np.int16)
    paths = []
    for k in range(n):
        ds = make_dataset((base + 100 * k).astype(np.int16), signed=True, study_uid=study_uid, series_uid=series_uid,
                          position=(0.0, 0.0, k * gap), RescaleSlope=1, RescaleIntercept=-1024, InstanceNumber=n - k,
                          SliceThickness=gap, SeriesNumber=2, **attrs)
        name = names(k) if names else f"slice_{k:03d}.dcm"
        paths.append(write(ds, folder / name))
    return paths


