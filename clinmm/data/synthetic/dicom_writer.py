"""Write synthetic images as real DICOM: CR and DX (For Presentation) radiographs and CT series.

Every file is a complete instance of its IOD (Patient, General Study, General Series, Equipment, Image Pixel, the
modality-specific modules, SOP Common), so ``dciodvfy`` reports no errors and ``pydicom.dcmread`` reads it strictly.
UIDs come from :func:`pydicom.uid.generate_uid` with deterministic entropy sources, dates and times are derived
from the seed, and no wall-clock value is written: the same inputs give byte-identical files. All identifiers are
synthetic.

Pixel encoding (brightness ``v`` in [0, 1], higher = brighter):

- the site's detector response maps ``v`` to a raw value (``SiteProfile.response``);
- MONOCHROME2: modality value ``m = raw``; MONOCHROME1: ``m = 4095 - raw`` (higher = darker, as the standard says);
- stored value ``= round((m - RescaleIntercept) / RescaleSlope)``; window centre/width describe ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

__all__ = [
    "SiteProfile",
    "DicomStudyInfo",
    "RadiographEncoding",
    "make_uid",
    "write_radiograph",
    "write_ct_series",
]

_IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's root + 1: a valid, stable implementation UID
_VIEW_CODES = {"PA": ("399348003", "postero-anterior"), "AP": ("399182006", "antero-posterior")}  # CID 4010


@dataclass(frozen=True)
class SiteProfile:
    """One acquisition site.

    Args:
        name: site label written to the manifest (``site_a`` …).
        manufacturer: Manufacturer written to the DICOM header.
        model: ManufacturerModelName.
        institution: InstitutionName (synthetic).
        gamma: detector response exponent (1.0 = linear).
        gain: raw units per brightness unit.
        offset: raw value at brightness 0.
    """

    name: str
    manufacturer: str
    model: str
    institution: str
    gamma: float = 1.0
    gain: float = 3600.0
    offset: float = 200.0

    def response(self, v: np.ndarray) -> np.ndarray:
        """Brightness in [0, 1] → raw detector value in [0, 4095] (float)."""
        return np.clip(self.offset + self.gain * np.power(np.clip(v, 0.0, 1.0), self.gamma), 0.0, 4095.0)


@dataclass(frozen=True)
class DicomStudyInfo:
    """Patient- and study-level header values (all synthetic).

    Args:
        seed: data-set seed (part of every UID's entropy).
        study_id: manifest study id.
        patient_id: manifest patient id.
        patient_name: synthetic PatientName.
        sex: ``M`` or ``F``.
        birth_date: YYYYMMDD.
        age_years: age at the study.
        study_date: YYYYMMDD.
        study_time: HHMMSS.
        accession: AccessionNumber.
        site: the acquisition site.
    """

    seed: int
    study_id: str
    patient_id: str
    patient_name: str
    sex: str
    birth_date: str
    age_years: int
    study_date: str
    study_time: str
    accession: str
    site: SiteProfile

    @property
    def study_uid(self) -> str:
        return make_uid(self.seed, self.study_id, "study")


@dataclass(frozen=True)
class RadiographEncoding:
    """How a radiograph is stored.

    Args:
        modality: ``CR`` or ``DX``.
        view: ``PA`` or ``AP``.
        photometric: ``MONOCHROME1`` or ``MONOCHROME2``.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        transfer_syntax: ExplicitVRLittleEndian, RLELossless or JPEGLSLossless.
        pixel_spacing: detector pixel spacing in mm.
    """

    modality: str
    view: str
    photometric: str
    slope: float = 1.0
    intercept: float = 0.0
    transfer_syntax: str = ExplicitVRLittleEndian
    pixel_spacing: float = 1.4


def make_uid(seed: int, *parts: str) -> str:
    """Deterministic valid UID from the seed and any identifying parts (pydicom root, SHA-512 of the sources)."""
    return str(generate_uid(entropy_srcs=["clinmm-synthetic", str(seed), *parts]))


def _ds_number(value: float) -> str:
    """A DS string without float noise (≤ 16 characters)."""
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.8e}"


def _base_dataset(info: DicomStudyInfo, *, sop_class: str, sop_uid: str, modality: str, series_uid: str,
                  series_number: int, series_description: str) -> Dataset:
    """Patient, General Study, General Series, General Equipment and SOP Common modules."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CLINMM_SYNTH"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = info.study_date
    ds.SeriesDate = info.study_date
    ds.ContentDate = info.study_date
    ds.StudyTime = info.study_time
    ds.SeriesTime = info.study_time
    ds.ContentTime = info.study_time
    ds.AccessionNumber = info.accession
    ds.Modality = modality
    ds.Manufacturer = info.site.manufacturer
    ds.InstitutionName = info.site.institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = info.site.model
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.birth_date
    ds.PatientSex = info.sex
    ds.PatientAge = f"{info.age_years:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic data (clinmm sample-data); no real patient"
    ds.BodyPartExamined = "CHEST"
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = info.study_id[-16:]
    ds.SeriesNumber = series_number
    return ds


def _pixel_module(ds: Dataset, stored: np.ndarray, *, photometric: str, bits_stored: int, signed: bool) -> None:
    """Image Pixel module for a single-sample greyscale frame (H, W)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()


def _save(ds: Dataset, path: Path, transfer_syntax: str) -> None:
    """Encode (if asked) and write a DICOM file with a complete file meta header."""
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    elif transfer_syntax == JPEGLSLossless:
        ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls", generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_radiograph(
    path: Path,
    brightness: np.ndarray,
    *,
    info: DicomStudyInfo,
    encoding: RadiographEncoding,
) -> str:
    """Write one CR or DX (For Presentation) image.

    Args:
        path: output file.
        brightness: (H, W) float in [0, 1], higher = brighter.
        info: patient/study header values.
        encoding: modality, view, photometric interpretation, rescale and transfer syntax.

    Returns:
        The SOPInstanceUID written.
    """
    raw = info.site.response(brightness)  # (H, W) raw detector values
    modality_values = raw if encoding.photometric == "MONOCHROME2" else 4095.0 - raw
    stored = np.clip(np.round((modality_values - encoding.intercept) / encoding.slope), 0, 4095).astype(np.uint16)
    m = stored.astype(np.float64) * encoding.slope + encoding.intercept
    lo, hi = np.percentile(m, [1.0, 99.0])
    sop_class = ComputedRadiographyImageStorage if encoding.modality == "CR" else DigitalXRayImageStorageForPresentation
    series_uid = make_uid(info.seed, info.study_id, "series", "1")
    sop_uid = make_uid(info.seed, info.study_id, "instance", "1", "1")
    ds = _base_dataset(info, sop_class=sop_class, sop_uid=sop_uid, modality=encoding.modality, series_uid=series_uid,
                       series_number=1, series_description=f"CHEST {encoding.view}")
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"] if encoding.view == "AP" else ["R", "F"]
    ds.ViewPosition = encoding.view
    ds.ImageLaterality = "U"
    ds.KVP = "120"
    ds.ExposureTime = 10
    ds.XRayTubeCurrent = 250
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.RescaleIntercept = _ds_number(encoding.intercept)
    ds.RescaleSlope = _ds_number(encoding.slope)
    ds.WindowCenter = _ds_number(round(float((lo + hi) / 2), 1))
    ds.WindowWidth = _ds_number(round(float(max(hi - lo, 1.0)), 1))
    if encoding.modality == "CR":
        ds.ImagerPixelSpacing = [_ds_number(encoding.pixel_spacing)] * 2
        ds.RescaleType = "US"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if encoding.photometric == "MONOCHROME2" else 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "IDENTITY" if encoding.photometric == "MONOCHROME2" else "INVERSE"
        ds.DetectorType = "SCINTILLATOR"
        ds.ImagerPixelSpacing = [_ds_number(encoding.pixel_spacing)] * 2
        ds.PixelSpacing = [_ds_number(encoding.pixel_spacing)] * 2
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Nominal detector geometry"
        ds.DistanceSourceToDetector = "1800"
        ds.DistanceSourceToPatient = "1650"
        ds.EstimatedRadiographicMagnificationFactor = _ds_number(1800 / 1650)
        ds.AcquisitionContextSequence = Sequence()
        region = Dataset()
        region.CodeValue = "51185008"
        region.CodingSchemeDesignator = "SCT"
        region.CodeMeaning = "Chest"
        ds.AnatomicRegionSequence = Sequence([region])
        ds.PatientPosition = ""
        ds.PositionerType = "COLUMN"
        view_code = Dataset()
        view_code.CodeValue, view_code.CodeMeaning = _VIEW_CODES[encoding.view]
        view_code.CodingSchemeDesignator = "SCT"
        ds.ViewCodeSequence = Sequence([view_code])
    _pixel_module(ds, stored, photometric=encoding.photometric, bits_stored=12, signed=False)
    _save(ds, path, encoding.transfer_syntax)
    return sop_uid


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    *,
    info: DicomStudyInfo,
    pixel_spacing: float,
    slice_thickness: float,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[str]:
    """Write an axial CT series, one file per slice (``IM0001.dcm`` …), head-first supine.

    Args:
        folder: output series folder.
        hu: (S, H, W) Hounsfield units, slice 0 the most inferior.
        info: patient/study header values.
        pixel_spacing: in-plane spacing in mm.
        slice_thickness: slice thickness = slice spacing in mm.
        transfer_syntax: ExplicitVRLittleEndian or RLELossless.

    Returns:
        The SOPInstanceUIDs written, in slice order.
    """
    series_uid = make_uid(info.seed, info.study_id, "series", "ct")
    frame_uid = make_uid(info.seed, info.study_id, "frame-of-reference")
    rows, cols = hu.shape[1:]
    z0 = -100.0
    uids = []
    for s in range(hu.shape[0]):
        sop_uid = make_uid(info.seed, info.study_id, "instance", "ct", str(s))
        ds = _base_dataset(info, sop_class=CTImageStorage, sop_uid=sop_uid, modality="CT", series_uid=series_uid,
                           series_number=2, series_description="CHEST AXIAL")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = s + 1
        ds.AcquisitionNumber = 1
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.PixelSpacing = [_ds_number(pixel_spacing)] * 2
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [
            _ds_number(-pixel_spacing * (cols - 1) / 2),
            _ds_number(-pixel_spacing * (rows - 1) / 2),
            _ds_number(z0 + s * slice_thickness),
        ]
        ds.SliceLocation = _ds_number(z0 + s * slice_thickness)
        ds.SliceThickness = _ds_number(slice_thickness)
        ds.KVP = "120"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = ["-600", "40"]
        ds.WindowWidth = ["1500", "400"]
        ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
        ds.BurnedInAnnotation = "NO"
        stored = np.clip(np.round(hu[s] + 1024.0), 0, 4095).astype(np.uint16)
        _pixel_module(ds, stored, photometric="MONOCHROME2", bits_stored=12, signed=False)
        _save(ds, folder / f"IM{s + 1:04d}.dcm", transfer_syntax)
        uids.append(sop_uid)
    return uids

