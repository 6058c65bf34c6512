"""Manifest files (CSV or Parquet): one row per study, in the schema of docs/data.md.

Required columns: ``study_id, patient_id, split, image_path`` and ``note_text`` or ``note_path``; one
``label_<finding>`` column per finding (1 / 0 / blank = unknown); any further columns (e.g. ``sex, age_band,
site``) are kept as subgroups. ``image_path`` and ``note_path`` are relative to the manifest's folder unless absolute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clinmm.errors import ManifestError

__all__ = ["StudyRecord", "Manifest", "read_manifest", "LABEL_PREFIX"]

LABEL_PREFIX = "label_"
REQUIRED = ("study_id", "patient_id", "split", "image_path")


@dataclass
class StudyRecord:
    """One manifest row.

    Args:
        study_id: the manifest's identifier for the study.
        patient_id: patient identifier (splits and bootstrap are by patient).
        split: ``train``, ``val``, ``test`` (or any name).
        image_path: absolute path of the DICOM file or series folder, or None when the study has no image.
        note_text: the note, or None when missing.
        labels: (C,) float array of 1 / 0 / NaN in the manifest's label order.
        extra: every other column (subgroups such as sex, age_band, site).
    """

    study_id: str
    patient_id: str
    split: str
    image_path: Path | None
    note_text: str | None
    labels: np.ndarray
    extra: dict = field(default_factory=dict)


@dataclass
class Manifest:
    """A parsed manifest: the label names and the records."""

    path: Path
    labels: list[str]
    records: list[StudyRecord]

    def split(self, name: str) -> list[StudyRecord]:
        return [r for r in self.records if r.split == name]

    def label_matrix(self, records: list[StudyRecord] | None = None) -> np.ndarray:
        """(N, C) float with NaN for unknown."""
        rows = records if records is not None else self.records
        return np.stack([r.labels for r in rows]) if rows else np.zeros((0, len(self.labels)))


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and
                                                                                   not value.strip())


def _label_value(value, *, path: Path, row: int, column: str) -> float:
    if _blank(value):
        return float("nan")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{path}: row {row}, column {column}: expected 1, 0 or blank, got {value!r}") from None
    if v not in (0.0, 1.0):
        raise ManifestError(f"{path}: row {row}, column {column}: expected 1, 0 or blank, got {value!r}")
    return v


def read_manifest(path: str | Path, *, labels: list[str] | None = None) -> Manifest:
    """Read and validate a manifest.

    Args:
        path: CSV or Parquet file.
        labels: label names to use (in this order); default: every ``label_*`` column in file order.

    Raises:
        ManifestError: missing file or column, or a label value other than 1 / 0 / blank (row and column named).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as err:  # pandas raises many types for unreadable files
        raise ManifestError(f"{path}: cannot read manifest: {err}") from err
    missing = [c for c in REQUIRED if c not in df.columns]
    if "note_text" not in df.columns and "note_path" not in df.columns:
        missing.append("note_text or note_path")
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    file_labels = [c[len(LABEL_PREFIX):] for c in df.columns if c.startswith(LABEL_PREFIX)]
    if labels:
        absent = [lab for lab in labels if lab not in file_labels]
        if absent:
            raise ManifestError(f"{path}: label column(s) {[LABEL_PREFIX + a for a in absent]} not found")
    else:
        labels = file_labels
    if not labels:
        raise ManifestError(f"{path}: no label_<finding> columns")
    root = path.parent
    known = set(REQUIRED) | {"note_text", "note_path"} | {LABEL_PREFIX + lab for lab in file_labels}
    records = []
    for i, row in enumerate(df.to_dict(orient="records"), start=2):  # row 1 is the header
        image = row.get("image_path")
        image_path = None if _blank(image) else (Path(image) if Path(image).is_absolute() else root / image)
        note = row.get("note_text")
        if _blank(note) and not _blank(row.get("note_path")):
            note_file = Path(row["note_path"])
            note_file = note_file if note_file.is_absolute() else root / note_file
            try:
                note = note_file.read_text(encoding="utf-8")
            except OSError as err:
                raise ManifestError(f"{path}: row {i}: cannot read note_path {note_file}: {err.strerror}") from err
        note_text = None if _blank(note) else str(note)
        values = np.array([_label_value(row.get(LABEL_PREFIX + lab), path=path, row=i, column=LABEL_PREFIX + lab)
                           for lab in labels], dtype=np.float32)
        extra = {k: ("" if _blank(v) else str(v)) for k, v in row.items() if k not in known}
        records.append(StudyRecord(study_id=str(row["study_id"]), patient_id=str(row["patient_id"]),
                                   split=str(row["split"]), image_path=image_path, note_text=note_text,
                                   labels=values, extra=extra))
    return Manifest(path=path, labels=list(labels), records=records)
