"""Run a checkpoint over a manifest split and collect the arrays :func:`compute_validation_report` needs.

Comparators for the DeLong fusion tests come from the SAME fused checkpoint run with the note removed
(``image_only``) and with the image removed (``text_only``) — the model's own missing-modality path
(:meth:`clinmm.models.classifier.ClinmmModel.forward_ablations`) — plus one entry per ``--compare``
checkpoint. Heavy imports (torch) live here so that :mod:`clinmm.report.validation` stays light.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clinmm.errors import ManifestError
from clinmm.report.validation import FailureCase, _thumbnail_png

__all__ = ["SplitData", "ThreeWay", "predict_three_ways", "run_split", "scrub_note"]

logger = logging.getLogger(__name__)

SUBGROUP_COLUMNS = ("sex", "age_band", "site")

def scrub_note(text: str, *, max_chars: int = 280) -> str:
    """A note excerpt for the report gallery: :func:`clinmm.text.preprocess.scrub_phi` (the dashboard's rule too),
    whitespace collapsed, cut to ``max_chars``. Not a de-identification guarantee; the report says so."""
    from clinmm.text.preprocess import scrub_phi

    out = " ".join(scrub_phi(text).text.split())
    return out if len(out) <= max_chars else out[: max_chars - 1].rstrip() + "…"


@dataclass
class SplitData:
    """Everything layer 1 needs, from one run over a split (arrays are row-aligned with ``study_ids``)."""

    labels: list[str]
    study_ids: list[str]
    y_true: np.ndarray  # (N, C) 1/0/NaN
    y_score: np.ndarray  # (N, C) calibrated
    y_score_uncalibrated: np.ndarray  # (N, C) sigmoid(logits)
    thresholds: np.ndarray  # (C,)
    patient_ids: np.ndarray  # (N,)
    modality: np.ndarray  # (N,) both / image_only / note_only / none
    subgroups: dict[str, np.ndarray]
    comparators: dict[str, np.ndarray]
    comparator_descriptions: dict[str, str]
    ingestion_flow: dict[str, Any]
    model_card: dict[str, Any]
    limitations: list[str] = field(default_factory=list)
    image_paths: list[Path | None] = field(default_factory=list)
    notes: list[str | None] = field(default_factory=list)

    def failure_case(self, row: int, label_index: int, kind: str) -> FailureCase:
        """Gallery entry for one study: thumbnail from the display image (pixels only), scrubbed note snippet."""
        thumb = None
        path = self.image_paths[row]
        if path is not None:
            from clinmm.errors import IngestError
            from clinmm.io.load import load_image

            try:
                vol = load_image(path)
                thumb = _thumbnail_png(vol.display[vol.display.shape[0] // 2])
            except IngestError as err:
                logger.info("gallery: no thumbnail for %s (%s)", self.study_ids[row], err.status)
        note = self.notes[row]
        return FailureCase(
            study=self.study_ids[row], label=self.labels[label_index], kind=kind,
            score=float(self.y_score[row, label_index]), threshold=float(self.thresholds[label_index]),
            truth=int(self.y_true[row, label_index]), modality=str(self.modality[row]),
            thumbnail_png=thumb, note_snippet=scrub_note(note) if note else None,
        )


@dataclass
class ThreeWay:
    """Fused, note-removed and image-removed predictions of one model (arrays (N, C); presence flags (N,))."""

    logits: np.ndarray
    probs: np.ndarray
    probs_image_only: np.ndarray
    probs_text_only: np.ndarray
    image_present: np.ndarray
    text_present: np.ndarray


def predict_three_ways(predictor: Any, samples: Sequence[Any], *, batch_size: int = 32) -> ThreeWay:
    """Fused, note-removed and image-removed calibrated predictions through
    :meth:`clinmm.models.classifier.ClinmmModel.forward_ablations` (each encoder runs once per batch, fusion three
    times; the same numbers as ``Predictor.predict`` with ``drop_text`` / ``drop_image``)."""
    import torch

    from clinmm.inference import autocast_for

    model = predictor.loaded.model
    device = predictor.loaded.device
    logits: list[list[np.ndarray]] = [[], [], []]
    img_flags, txt_flags = [], []
    with torch.inference_mode(), autocast_for(device):
        for start in range(0, len(samples), batch_size):
            inputs = predictor.collate(samples[start : start + batch_size]).inputs.to(device)
            out = model.forward_ablations(inputs)
            for k, z in enumerate((out.logits, out.logits_no_text, out.logits_no_image)):
                logits[k].append(z.float().cpu().numpy())  # (B, C)
            img_flags.append(inputs.image_present.cpu().numpy())
            txt_flags.append(inputs.text_present.cpu().numpy())
    raw = [np.concatenate(chunks).astype(np.float64) for chunks in logits]
    probs = [predictor.calibrate(r)[0].astype(np.float64) for r in raw]
    return ThreeWay(logits=raw[0], probs=probs[0], probs_image_only=probs[1], probs_text_only=probs[2],
                    image_present=np.concatenate(img_flags).astype(bool),
                    text_present=np.concatenate(txt_flags).astype(bool))


def _modality(image: bool, text: bool) -> str:
    return {(True, True): "both", (True, False): "image_only", (False, True): "note_only"}.get((image, text), "none")


def run_split(model_dir: str | Path, manifest: str | Path, *, split: str, compare: Sequence[Path] = (),
              device: str = "cpu", batch_size: int = 32) -> SplitData:
    """Predict a manifest split with the fused model, its missing-modality variants and any compared checkpoints.

    Raises:
        ManifestError: the split has no studies.
        CheckpointError / ChecksumError: from :func:`clinmm.inference.load_checkpoint`.
    """
    from clinmm.data.manifest import read_manifest
    from clinmm.inference import Predictor, load_checkpoint, resolve_device

    dev = resolve_device(device)
    loaded = load_checkpoint(model_dir, device=dev)
    labels = list(loaded.labels)
    man = read_manifest(manifest, labels=labels)
    records = man.split(split)
    if not records:
        present = sorted({r.split for r in man.records})
        raise ManifestError(f"{manifest}: no studies in split {split!r}; splits present: {present}")
    predictor = Predictor(loaded)
    samples = [predictor.prepare(r.image_path, r.note_text, key=r.study_id, labels=r.labels) for r in records]

    # Flow, as `clinmm score` decides: a study whose image is outside the checkpoint's scope (modality, view, body
    # part) is not scored; an image that fails ingestion makes the study note-only; no usable input -> excluded.
    from clinmm.scoring.pipeline import ScopeRule

    scope = ScopeRule.from_checkpoint(loaded.scope)
    status_counts = Counter(s.image_status for s in samples)
    excluded: Counter = Counter()
    usable = []
    for i, s in enumerate(samples):
        violations = scope.violations(str(s.meta.get("Modality", "")), str(s.meta.get("ViewPosition", "")),
                                      str(s.meta.get("BodyPartExamined", ""))) if s.image is not None else []
        if violations:
            excluded[f"out_of_scope ({';'.join(violations)})"] += 1
        elif s.image is None and s.note.input_ids.shape[0] == 0:
            excluded[f"no usable input (image: {s.image_status})"] += 1
        else:
            usable.append(i)
    flow: dict[str, Any] = {
        "manifest_studies": len(man.records),
        "split_studies": len(records),
        "included": len(usable),
        "excluded": dict(sorted(excluded.items())),
        "image ingestion status (split)": ", ".join(f"{k}: {v}" for k, v in sorted(status_counts.items())),
        "studies per split (manifest)": ", ".join(f"{k}: {v}" for k, v in
                                                  sorted(Counter(r.split for r in man.records).items())),
        "patients in split (before exclusions)": len({r.patient_id for r in records}),
        "patients of this split also in other splits": len({r.patient_id for r in records}
                                                           & {r.patient_id for r in man.records if r.split != split}),
        "manifest": Path(manifest).name,
        "checkpoint sha256": loaded.sha256[:16],
    }
    samples = [samples[i] for i in usable]
    records = [records[i] for i in usable]

    three = predict_three_ways(predictor, samples, batch_size=batch_size)
    y_score, logits = three.probs, three.logits
    comparators = {"image_only": three.probs_image_only, "text_only": three.probs_text_only}
    descriptions = {
        "image_only": "the same fused checkpoint with every note removed (missing-modality inference)",
        "text_only": "the same fused checkpoint with every image removed (missing-modality inference)",
    }
    for path in compare:
        other = load_checkpoint(path, device=dev)
        if list(other.labels) != labels:
            raise ManifestError(f"{path}: compared checkpoint has labels {other.labels}, expected {labels}")
        op = Predictor(other)
        osamples = [op.prepare(r.image_path, r.note_text, key=r.study_id) for r in records]
        name = Path(path).name or str(path)
        comparators[name] = np.stack([p.probs for p in op.predict(osamples, batch_size=batch_size)]).astype(
            np.float64)
        descriptions[name] = f"separate checkpoint {name} (sha256 {other.sha256[:12]})"

    subgroups = {}
    for col in SUBGROUP_COLUMNS:
        if any(col in r.extra for r in records):
            subgroups[col] = np.array([r.extra.get(col, "") for r in records])
    limitations = []
    card = dict(loaded.model_card)
    versions = Path(loaded.path) / "versions.json"
    if versions.is_file():
        try:
            card["software_versions"] = json.loads(versions.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("%s: not valid JSON; software versions left out of the report", versions)
    if card.get("limitations"):
        lim = card["limitations"]
        limitations.extend(lim if isinstance(lim, list) else [str(lim)])
    return SplitData(
        labels=labels,
        study_ids=[r.study_id for r in records],
        y_true=np.stack([r.labels for r in records]).astype(np.float64),
        y_score=y_score,
        y_score_uncalibrated=1.0 / (1.0 + np.exp(-logits)),
        thresholds=np.asarray(loaded.thresholds, dtype=np.float64),
        patient_ids=np.array([r.patient_id for r in records]),
        modality=np.array([_modality(i, t) for i, t in zip(three.image_present, three.text_present)]),
        subgroups=subgroups,
        comparators=comparators,
        comparator_descriptions=descriptions,
        ingestion_flow=flow,
        model_card=card,
        limitations=limitations,
        image_paths=[r.image_path for r in records],
        notes=[r.note_text for r in records],
    )
