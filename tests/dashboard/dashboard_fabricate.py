"""Fabricated dashboard inputs FOR TESTS ONLY: a scoring output folder, its manifest with real DICOM files, and a
checkpoint directory's metadata files (model card, labels with calibration, config, sha256 manifest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

LABELS = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]


def write_cr(path: Path, *, seed: int = 0, rows: int = 48, cols: int = 40) -> Path:
    """A small but valid CR DICOM file (MONOCHROME2, 12-bit, rescale attributes)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.AccessionNumber = f"PAT{seed:04d}", "Test^Patient", f"ACC{seed:04d}"
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "CR", "PA", "CHEST"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    rng = np.random.default_rng(seed)
    pixels = (rng.random((rows, cols)) * 3000 + 500).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def fabricate_scores_dir(folder: Path, *, n: int = 6) -> Path:
    """predictions.{parquet,csv}, errors.csv, run.json and the manifest (+ DICOM files) they were scored from.

    Study s003 has no note, s004 has no image, s005 failed to decode (status not ok).
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = folder.parent / "inputs"
    rng = np.random.default_rng(1)
    manifest_rows, pred_rows = [], []
    for i in range(n):
        sid = f"s{i:03d}"
        has_image, has_note = i != 4, i != 3
        image_path = f"dicom/{sid}.dcm" if has_image else ""
        if has_image:
            write_cr(data / image_path, seed=i)
        note = (f"Seen by Dr. Jones on 12/03/2024. Patient with cough. Fever to 38.{i} C reported. No dyspnea."
                if has_note else "")
        manifest_rows.append({"study_id": sid, "patient_id": f"p{i:03d}", "split": "test", "image_path": image_path,
                              "note_text": note, **{f"label_{l}": "" for l in LABELS}, "sex": "F" if i % 2 else "M",
                              "age_band": "40-60", "site": "A"})
        probs = rng.random(len(LABELS))
        pred_rows.append({
            "study_key": hashlib.sha256(sid.encode()).hexdigest()[:32], "study_id": sid,
            "source_path": image_path, "status": "ok" if i != 5 else "truncated",
            "unlike_training": "intensity:std;grid:rows" if i == 2 else "",
            "image_present": has_image and i != 5, "note_present": has_note,
            **{f"prob_{l}": float(p) for l, p in zip(LABELS, probs, strict=True)},
            **{f"decision_{l}": int(p >= 0.5) for l, p in zip(LABELS, probs, strict=True)},
            "n_files": int(has_image), "n_files_ok": int(has_image and i != 5), "model_sha256": "ab" * 32,
            "clinmm_version": "0.1.0", "preprocessing_hash": "cd" * 32, "provenance": "{}",
        })
    manifest = data / "manifest.csv"
    pd.DataFrame(manifest_rows).to_csv(manifest, index=False)
    predictions = pd.DataFrame(pred_rows)
    predictions.to_parquet(folder / "predictions.parquet", index=False)
    predictions.to_csv(folder / "predictions.csv", index=False)
    pd.DataFrame([{"path": "dicom/s005.dcm", "status": "truncated", "detail": "", "message": "pixel data truncated"}]
                 ).to_csv(folder / "errors.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"input": str(manifest), "counts": {"studies": n}}))
    return folder


def fabricate_checkpoint_dir(folder: Path) -> Path:
    """The metadata files of a checkpoint (no weights): what the model card page and worklist thresholds read."""
    folder.mkdir(parents=True, exist_ok=True)
    card = {
        "name": "clinmm-test-card",
        "clinmm_version": "0.1.0",
        "intended_use": "Test card: flags findings for clinician review. Not a diagnosis.",
        "training_data": {"manifest": "manifest.csv", "studies": {"train": 10}},
        "validation": {"macro_auroc": 0.81},
        "limitations": ["Image encoder trained from scratch.", "Only CR/DX chest views seen in training."],
    }
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "labels.json").write_text(json.dumps({
        "labels": LABELS, "calibration": [{"method": "none", "threshold": 0.3 + 0.1 * i} for i in range(5)]}))
    (folder / "config.json").write_text(json.dumps({"labels": LABELS, "config": {}}))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    files["model.safetensors"] = "ef" * 32
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


def build_untrained_checkpoint(folder: Path, labels: list[str] | None = None) -> Path:
    """A checkpoint in the real format (demo architecture, untrained weights): tests the plumbing, not accuracy."""
    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import build_model, save_checkpoint
    from clinmm.config import demo_config

    labels = list(labels or LABELS)
    config = demo_config()
    config.data.labels = labels
    return save_checkpoint(folder, model=build_model(config, labels), config=config, labels=labels,
                           calibration=[LabelCalibration(threshold=0.5) for _ in labels],
                           scope={"modalities": ["CR", "DX"], "views": [], "body_parts": []},
                           model_card={"name": "clinmm-untrained-test", "intended_use": "tests only",
                                       "limitations": ["untrained weights"]}, reference={})
