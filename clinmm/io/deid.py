"""De-identification of every DICOM field clinmm shows or exports: DICOM PS3.15 Annex E Basic Profile.

The profile's table is not hand-written here: it comes from the maintained ``dicom-anonymizer`` package (Kitware;
rules generated from PS3.15 Annex E, private tags removed). Two entry points:

- :func:`deidentify_dataset` — a de-identified *copy* of a whole dataset (for anything exported as DICOM).
- :func:`deidentified_meta` — the small dict of display fields (modality, body part, view, manufacturer, geometry,
  window) that ``ImageVolume.meta``, inspect rows and the dashboard use. It copies only those fields into a new
  dataset, runs the same Basic Profile over it and keeps what survives, so a field the profile removes or blanks
  (e.g. StudyDescription, dates, names) can never appear even if someone adds it to :data:`DISPLAY_FIELDS`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from clinmm.io.dicom import pydicom_quiet

__all__ = ["DISPLAY_FIELDS", "deidentify_dataset", "deidentified_meta"]

logger = logging.getLogger(__name__)

#: Fields offered for display / export after the Basic Profile has run over them.
DISPLAY_FIELDS: tuple[str, ...] = (
    "Modality",
    "SOPClassUID",
    "BodyPartExamined",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "PatientOrientation",
    "Manufacturer",
    "ManufacturerModelName",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "KVP",
    "ImageType",
    "StudyDescription",
    "SeriesDescription",
)

_RULES: dict | None = None
_DISPLAY_RULES: dict | None = None


def _rules() -> dict:
    """The Annex E Basic Profile actions of dicom-anonymizer (built once per process)."""
    global _RULES
    if _RULES is None:
        from dicomanonymizer.simpledicomanonymizer import initialize_actions

        _RULES = initialize_actions()
    return dict(_RULES)


def _display_rules() -> dict:
    """The same profile restricted to the rules that can match a :data:`DISPLAY_FIELDS` tag.

    Every other rule is a no-op on a dataset that holds only those fields (their actions act on a tag that is
    absent), so the result is identical while skipping ~600 look-ups per file (inspect throughput).
    """
    global _DISPLAY_RULES
    if _DISPLAY_RULES is None:
        from pydicom.datadict import tag_for_keyword

        tags = [tag_for_keyword(k) for k in DISPLAY_FIELDS]
        pairs = {(t >> 16, t & 0xFFFF) for t in tags if t is not None}
        keep = {}
        for rule, action in _rules().items():
            if len(rule) == 2 and tuple(rule) in pairs:
                keep[rule] = action
            elif len(rule) == 4 and any(g & rule[2] == rule[0] & rule[2] and e & rule[3] == rule[1] & rule[3]
                                        for g, e in pairs):
                keep[rule] = action
        _DISPLAY_RULES = keep
    return dict(_DISPLAY_RULES)


def deidentify_dataset(ds: Dataset, *, keep_pixels: bool = True) -> Dataset:
    """A de-identified copy of ``ds`` (PS3.15 Annex E Basic Profile via dicom-anonymizer; private tags removed).

    Args:
        ds: source dataset (left unchanged).
        keep_pixels: keep Pixel Data in the copy (False drops it, e.g. for header-only exports).

    Returns:
        The de-identified copy. UIDs are replaced consistently within the process.
    """
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset

    if keep_pixels:
        out = copy.deepcopy(ds)
    else:
        out = Dataset()
        for elem in ds:
            if elem.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                out.add(copy.deepcopy(elem))
        if getattr(ds, "file_meta", None) is not None:
            out.file_meta = copy.deepcopy(ds.file_meta)
    with pydicom_quiet():
        anonymize_dataset(out, delete_private_tags=True, base_rules_gen=_rules)
    return out


def _plain(value: Any) -> str | float | int:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def deidentified_meta(ds: Dataset) -> dict[str, str | float | int]:
    """Display fields of ``ds`` after the Annex E Basic Profile (empty or removed values are dropped).

    Args:
        ds: a dataset (only :data:`DISPLAY_FIELDS` are read; sequences are never copied).

    Returns:
        ``{keyword: value}`` with plain str / int / float values; safe to log, show and export.
    """
    with pydicom_quiet():  # converting a malformed value makes pydicom warn, quoting the value
        return _deidentified_meta(ds)


def _deidentified_meta(ds: Dataset) -> dict[str, str | float | int]:
    """Body of :func:`deidentified_meta`."""
    small = Dataset()
    for keyword in DISPLAY_FIELDS:
        try:
            elem = ds.data_element(keyword)
        except Exception:  # malformed element: leave it out
            elem = None
        if elem is None or elem.VR == "SQ":
            continue
        # a new element around a copied value: the profile's actions never reach the source dataset
        small.add(DataElement(elem.tag, elem.VR, copy.copy(elem.value)))
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset

    try:
        anonymize_dataset(small, delete_private_tags=True, base_rules_gen=_display_rules)
    except Exception as err:  # never export un-processed fields
        logger.warning("de-identification failed (%s); no display fields kept", type(err).__name__)
        return {}
    out: dict[str, str | float | int] = {}
    for elem in small:
        try:
            value = elem.value
            if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
                continue
            out[elem.keyword] = _plain(value)
        except Exception:
            continue
    return out
