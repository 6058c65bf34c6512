"""DICOM Structured Report output: one Comprehensive SR per scored study, TID 1500 (Measurement Report), via highdicom.

Content (PS3.16 TID 1500 → TID 1501 "Measurement and Qualitative Evaluation Group", one group per finding):

- observation context: a *device* observer (clinmm, model name, model sha256 as serial number);
- per finding: tracking identifier (the label name), finding type (SNOMED CT code where one is known, else a
  private ``99CLINMM`` code), the algorithm (name + clinmm version), a **measurement** "probability of finding"
  (UCUM ``1``) holding the calibrated probability, a **qualitative evaluation** (the finding → SNOMED CT
  Present / Absent at the stored decision threshold), and the **source image** (SOP Class / Instance of the slice the
  model read) of the source series;
- evidence: the source series' instances (Current Requested Procedure Evidence Sequence).

The SR is written for the hospital's own systems: like any SR it carries the source study's patient and study
identification (highdicom copies it from the source image), so it is *not* de-identified and never leaves the
hospital's PACS. Everything is deterministic — UIDs derive from the study key and model sha256, and the content
date/time is the source study's date/time (else 19000101/000000) — so a rerun writes the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import UID

__all__ = ["FINDING_CODES", "SRFinding", "build_sr", "finding_code", "deterministic_uid"]

logger = logging.getLogger(__name__)

#: Finding → SNOMED CT concept (value, scheme, meaning) for the labels clinmm knows; others get a 99CLINMM code.
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "nodule": ("27925004", "SCT", "Nodule"),
    "consolidation": ("95436008", "SCT", "Lung consolidation"),
    "fever": ("386661006", "SCT", "Fever"),
    "dyspnea": ("267036007", "SCT", "Dyspnea"),
    "pneumonia": ("233604007", "SCT", "Pneumonia"),
    "cardiomegaly": ("8186001", "SCT", "Cardiomegaly"),
    "pleural_effusion": ("60046008", "SCT", "Pleural effusion"),
    "atelectasis": ("46621007", "SCT", "Atelectasis"),
    "pneumothorax": ("36118008", "SCT", "Pneumothorax"),
}
_PRESENT = Code("52101004", "SCT", "Present")
_ABSENT = Code("2667000", "SCT", "Absent")
_PROBABILITY = Code("PROB", "99CLINMM", "Probability of finding")
_UNITLESS = Code("1", "UCUM", "no units")
_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
_UID_ROOT = "2.25."


def finding_code(label: str) -> Code:
    """The coded concept of a finding label."""
    if label in FINDING_CODES:
        return Code(*FINDING_CODES[label])
    return Code(label.upper()[:16], "99CLINMM", label.replace("_", " "))


def deterministic_uid(*parts: str) -> UID:
    """A UUID-derived ``2.25.<int>`` UID from a hash of ``parts`` (same inputs → same UID)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:16]
    return UID(_UID_ROOT + str(int.from_bytes(digest, "big")))


@dataclass
class SRFinding:
    """One finding of one study.

    Args:
        label: finding name.
        probability: calibrated probability.
        decision: positive at the stored threshold.
        threshold: the threshold.
    """

    label: str
    probability: float
    decision: bool
    threshold: float


def build_sr(source_image: Dataset, evidence: Sequence[Dataset], findings: Sequence[SRFinding], *, study_key: str,
             model_sha256: str, model_name: str, clinmm_version: str) -> Dataset:
    """A Comprehensive SR (TID 1500) for one study.

    Args:
        source_image: header of the image the model read (its SOP instance is referenced by every finding).
        evidence: headers of the source series' instances (``source_image`` included).
        findings: one per label.
        study_key: salted study key (seeds the UIDs).
        model_sha256: model identity (seeds the UIDs; device serial number).
        model_name: device model name.
        clinmm_version: algorithm version.

    Returns:
        The SR dataset (``highdicom.sr.ComprehensiveSR``).
    """
    import highdicom as hd
    from highdicom.sr import (AlgorithmIdentification, ComprehensiveSR, DeviceObserverIdentifyingAttributes,
                              Measurement, MeasurementReport, MeasurementsAndQualitativeEvaluations,
                              ObservationContext, ObserverContext, QualitativeEvaluation,
                              SourceImageForMeasurementGroup, TrackingIdentifier)
    from pydicom.sr.codedict import codes

    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=deterministic_uid("device", model_sha256), name="clinmm", manufacturer_name="clinmm",
            model_name=model_name[:64], serial_number=model_sha256[:16]),
    )
    algorithm = AlgorithmIdentification(name="clinmm", version=clinmm_version[:16] or "0")
    source = SourceImageForMeasurementGroup.from_source_image(source_image)
    groups = []
    for f in findings:
        concept = finding_code(f.label)
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=deterministic_uid("finding", study_key, model_sha256, f.label),
                                                   identifier=f.label),
            finding_type=concept,
            algorithm_id=algorithm,
            measurements=[Measurement(name=_PROBABILITY, value=round(float(f.probability), 6), unit=_UNITLESS,
                                      algorithm_id=algorithm)],
            qualitative_evaluations=[QualitativeEvaluation(name=concept, value=_PRESENT if f.decision else _ABSENT)],
            source_images=[source],
        ))
    report = MeasurementReport(observation_context=ObservationContext(observer_device_context=device),
                               procedure_reported=_PROCEDURE, imaging_measurements=groups)
    sr = ComprehensiveSR(
        evidence=list(evidence), content=report,
        series_instance_uid=deterministic_uid("sr-series", study_key, model_sha256), series_number=9901,
        sop_instance_uid=deterministic_uid("sr", study_key, model_sha256), instance_number=1,
        manufacturer="clinmm", is_complete=True, is_final=False, is_verified=False,
    )
    date = str(source_image.get("StudyDate", "") or "19000101")
    time = str(source_image.get("StudyTime", "") or "000000")
    for kw in ("ContentDate", "InstanceCreationDate", "SeriesDate"):
        if kw in sr:
            setattr(sr, kw, date)
    for kw in ("ContentTime", "InstanceCreationTime", "SeriesTime"):
        if kw in sr:
            setattr(sr, kw, time)
    for item in sr.get("ContributingEquipmentSequence", []) or []:
        if "ContributionDateTime" in item:  # highdicom stamps "now" here: keep the file reproducible
            item.ContributionDateTime = date + time.split(".")[0]
    sr.SeriesDescription = "clinmm findings"
    _ = hd  # highdicom imported for its SR classes above
    return sr


def write_sr(sr: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``sr`` atomically (temp file + fsync + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    sr.save_as(tmp, enforce_file_format=True)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return p


def read_source_headers(paths: Sequence[str | os.PathLike[str]]) -> list[Dataset]:
    """Headers (no pixels) of the source series' files, for SR evidence."""
    return [pydicom.dcmread(os.fspath(p), stop_before_pixels=True) for p in paths]


__all__ += ["write_sr", "read_source_headers"]
