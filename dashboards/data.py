"""What the dashboard pages show, as plain data: worklist rows, case sources, model card, report headline.

No Streamlit here (pages cache these functions' results). Inputs are the contracts in ``docs/dev/contracts.md``:
a scoring output folder, a checkpoint directory, and the manifest the scores came from.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "DataError",
    "ScoresTable",
    "load_scores",
    "filter_worklist",
    "worklist_counts",
    "deidentified_columns",
    "CaseSource",
    "case_source",
    "load_manifest_cases",
    "ModelInfo",
    "load_model_info",
    "ReportHeadline",
    "report_headline",
    "feedback_cases",
    "IDENTIFIED_FIELDS",
]

logger = logging.getLogger(__name__)

#: Columns shown only in identified mode (to signed-in users).
IDENTIFIED_FIELDS = ("patient_id", "accession_number", "study_instance_uid", "patient_name")
#: Worklist columns kept in de-identified mode (plus prob_/decision_ columns).
_WORKLIST_COLUMNS = ("study_key", "study_id", "status", "unlike_training", "image_present", "note_present", "n_files",
                     "n_files_ok")


class DataError(Exception):
    """A dashboard input (scores folder, checkpoint, manifest, report) is missing or malformed; names the file."""


@dataclass
class ScoresTable:
    """A scoring output folder, read once.

    Args:
        predictions: one row per study (``predictions.parquet`` or ``.csv``).
        errors: ``errors.csv`` rows (may be empty).
        labels: finding names, from the ``prob_<label>`` columns, in file order.
        run: ``run.json`` contents (may be empty).
        folder: the scoring output folder.
    """

    predictions: pd.DataFrame
    errors: pd.DataFrame
    labels: list[str]
    run: dict[str, Any]
    folder: Path


def load_scores(folder: str | Path) -> ScoresTable:
    """Read ``predictions.parquet`` (else ``predictions.csv``), ``errors.csv`` and ``run.json``.

    Raises:
        DataError: no predictions file, or it lacks ``study_key`` / ``prob_<label>`` columns.
    """
    folder = Path(folder)
    parquet, csv = folder / "predictions.parquet", folder / "predictions.csv"
    if parquet.is_file():
        predictions = pd.read_parquet(parquet)
    elif csv.is_file():
        predictions = pd.read_csv(csv, dtype={"study_key": str, "study_id": str})
    else:
        raise DataError(f"{folder}: no predictions.parquet or predictions.csv (is this a `clinmm score` output?)")
    if "study_key" not in predictions.columns:
        raise DataError(f"{folder}/predictions: missing column 'study_key'")
    labels = [c[len("prob_"):] for c in predictions.columns if c.startswith("prob_")]
    if not labels:
        raise DataError(f"{folder}/predictions: no prob_<label> columns")
    predictions = predictions.copy()
    for column, default in (("status", "ok"), ("image_present", True), ("note_present", True)):
        if column not in predictions.columns:
            predictions[column] = default
    for column in ("image_present", "note_present"):
        predictions[column] = predictions[column].fillna(False).astype(bool)
    errors_path = folder / "errors.csv"
    errors = pd.read_csv(errors_path) if errors_path.is_file() and errors_path.stat().st_size else pd.DataFrame(
        columns=["path", "status", "detail", "message"])
    run: dict[str, Any] = {}
    if (folder / "run.json").is_file():
        try:
            run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            logger.warning("%s/run.json is not JSON (%s); ignored", folder, err)
    return ScoresTable(predictions=predictions, errors=errors, labels=labels, run=run, folder=folder)


def deidentified_columns(predictions: pd.DataFrame, *, identified: bool = False) -> list[str]:
    """Worklist columns to show: study key/id, status, modality flags, probabilities and decisions.

    ``provenance`` (file paths) and any identified field are dropped unless ``identified``.
    """
    keep = [c for c in _WORKLIST_COLUMNS if c in predictions.columns]
    keep += [c for c in predictions.columns if c.startswith(("prob_", "decision_"))]
    if identified:
        keep += [c for c in IDENTIFIED_FIELDS if c in predictions.columns]
    return keep


def filter_worklist(
    predictions: pd.DataFrame,
    *,
    label: str | None = None,
    min_prob: float = 0.0,
    decision: str = "any",
    missing: str = "any",
    status: str = "any",
    usual: str = "any",
    sort_desc: bool = True,
) -> pd.DataFrame:
    """Filter and sort worklist rows.

    Args:
        predictions: the predictions table.
        label: finding to filter/sort by (``None``: sort by the highest probability of any finding).
        min_prob: keep rows whose probability of ``label`` is at least this.
        decision: ``any``, ``positive`` or ``negative`` (on ``decision_<label>``).
        missing: ``any``, ``none`` (both modalities), ``image`` (image missing), ``note`` (note missing).
        status: ``any``, ``ok`` or ``not_ok``.
        usual: ``any``, ``unlike`` (the image is unlike the training images: scoring's ``unlike_training`` column is
            not empty) or ``usual``; tables scored before the column existed count as usual.
        sort_desc: highest probability first.
    """
    df = predictions
    prob_cols = [c for c in df.columns if c.startswith("prob_")]
    score = df[f"prob_{label}"] if label else df[prob_cols].max(axis=1)
    mask = pd.Series(True, index=df.index)
    if label and min_prob > 0:
        mask &= score.fillna(-1) >= min_prob
    if label and decision != "any" and f"decision_{label}" in df.columns:
        mask &= df[f"decision_{label}"].fillna(-1).astype(int) == (1 if decision == "positive" else 0)
    if missing == "none":
        mask &= df["image_present"] & df["note_present"]
    elif missing == "image":
        mask &= ~df["image_present"]
    elif missing == "note":
        mask &= ~df["note_present"]
    if status == "ok":
        mask &= df["status"] == "ok"
    elif status == "not_ok":
        mask &= df["status"] != "ok"
    unlike = _unlike(df)
    if usual == "unlike":
        mask &= unlike
    elif usual == "usual":
        mask &= ~unlike
    out = df[mask].assign(_score=score[mask]).sort_values("_score", ascending=not sort_desc, na_position="last")
    return out.drop(columns="_score")


def _unlike(df: pd.DataFrame) -> pd.Series:
    """(N,) bool: scoring flagged the image as unlike the training images."""
    if "unlike_training" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["unlike_training"].fillna("").astype(str).str.len() > 0


def worklist_counts(table: ScoresTable) -> dict[str, int]:
    """Headline counts: studies, scored ok, not ok, missing image, missing note, unlike the training images, positive
    per label, file errors."""
    df = table.predictions
    counts = {
        "studies": len(df),
        "ok": int((df["status"] == "ok").sum()),
        "not_ok": int((df["status"] != "ok").sum()),
        "missing_image": int((~df["image_present"]).sum()),
        "missing_note": int((~df["note_present"]).sum()),
        "file_errors": len(table.errors),
        "unlike_training": int(_unlike(df).sum()),
    }
    for label in table.labels:
        column = f"decision_{label}"
        if column in df.columns:
            counts[f"positive_{label}"] = int((df[column].fillna(0).astype(int) == 1).sum())
    return counts


@dataclass
class CaseSource:
    """Where one study's inputs live (for re-scoring and display), plus the fields shown about it.

    Args:
        study_key: salted study key.
        study_id: manifest study id, when known.
        image_path: DICOM file or series folder, or None when the study has no image (or it cannot be located).
        note_text: the raw note ("" when the study has no note). Shown only after scrubbing.
        identified: patient ID / accession when the manifest has them (shown only in identified mode).
        subgroups: non-identifying manifest columns (sex, age band, site...).
    """

    study_key: str
    study_id: str | None = None
    image_path: Path | None = None
    note_text: str = ""
    identified: dict[str, str] = field(default_factory=dict)
    subgroups: dict[str, str] = field(default_factory=dict)


def _manifest_path(table: ScoresTable, manifest: Path | None) -> Path | None:
    if manifest is not None:
        return Path(manifest)
    recorded = table.run.get("input") or table.run.get("manifest")
    if isinstance(recorded, str) and recorded.lower().endswith((".csv", ".parquet")) and Path(recorded).is_file():
        return Path(recorded)
    return None


def load_manifest_cases(manifest: str | Path) -> pd.DataFrame:
    """Read a manifest (CSV or Parquet) with every column as text; empty cells become "" (cached per mtime)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found")
    return _read_manifest(str(manifest.resolve()), manifest.stat().st_mtime_ns).copy()


@functools.lru_cache(maxsize=4)
def _read_manifest(path: str, _mtime_ns: int) -> pd.DataFrame:
    manifest = Path(path)
    if manifest.suffix.lower() == ".parquet":
        df = pd.read_parquet(manifest).astype(str)
    else:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if "study_id" not in df.columns:
        raise DataError(f"{manifest}: missing column 'study_id'")
    return df.fillna("")


def case_source(table: ScoresTable, study_key: str, *, manifest: Path | None = None) -> CaseSource:
    """Locate a study's image and note: the manifest row (by ``study_id``) first, else ``source_path``.

    Raises:
        DataError: the study key is not in the predictions.
    """
    rows = table.predictions[table.predictions["study_key"].astype(str) == str(study_key)]
    if rows.empty:
        raise DataError(f"study {study_key!r} is not in {table.folder}/predictions")
    row = rows.iloc[0]
    study_id = str(row["study_id"]) if "study_id" in row.index and pd.notna(row["study_id"]) else None
    source = CaseSource(study_key=str(study_key), study_id=study_id)
    manifest_path = _manifest_path(table, manifest)
    if manifest_path is not None and study_id:
        cases = load_manifest_cases(manifest_path)
        match = cases[cases["study_id"] == study_id]
        if not match.empty:
            m = match.iloc[0]
            if m.get("image_path"):
                path = Path(m["image_path"])
                source.image_path = path if path.is_absolute() else manifest_path.parent / path
            source.note_text = m.get("note_text", "") or ""
            if not source.note_text and m.get("note_path"):
                note_path = Path(m["note_path"])
                note_path = note_path if note_path.is_absolute() else manifest_path.parent / note_path
                source.note_text = note_path.read_text(encoding="utf-8") if note_path.is_file() else ""
            source.identified = {k: m[k] for k in IDENTIFIED_FIELDS if k in m.index and m[k]}
            source.subgroups = {k: m[k] for k in ("sex", "age_band", "site", "modality", "view")
                                if k in m.index and m[k]}
            return source
    input_root = table.run.get("input")
    if source.image_path is None and "source_path" in row.index and pd.notna(row["source_path"]) and input_root:
        root = Path(input_root)
        root = root.parent if root.is_file() else root
        candidate = root / str(row["source_path"])
        source.image_path = candidate if candidate.exists() else None
    return source


@dataclass
class ModelInfo:
    """What the model card page shows, read from the checkpoint directory.

    Args:
        folder: checkpoint directory.
        card: ``model_card.json`` contents.
        labels: finding names in output order.
        thresholds: decision threshold per label.
        config: ``config.json`` contents.
        versions: ``versions.json`` contents.
        sha256: checksum of ``model.safetensors`` from ``manifest.json`` (empty when not recorded).
    """

    folder: Path
    card: dict[str, Any]
    labels: list[str]
    thresholds: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def name(self) -> str:
        return str(self.card.get("name") or self.card.get("model_name") or self.folder.name)

    @property
    def version(self) -> str:
        return str(self.card.get("version") or self.versions.get("clinmm") or "")

    @property
    def display_version(self) -> str:
        """``name version (sha256 prefix)`` — what feedback rows record."""
        short = f" ({self.sha256[:12]})" if self.sha256 else ""
        return f"{self.name} {self.version}".strip() + short


def _read_json(path: Path, *, required: bool) -> Any:
    if not path.is_file():
        if required:
            raise DataError(f"{path}: missing (checkpoint directories hold model_card.json and labels.json)")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


def _labels_and_thresholds(data: Any, path: Path) -> tuple[list[str], dict[str, float]]:
    """Accept ``{"labels": [...], "thresholds": {label: t} | [t...]}`` or ``[{"name", "threshold"}...]``."""
    if isinstance(data, list):
        names = [d["name"] if isinstance(d, dict) else str(d) for d in data]
        return names, {d["name"]: float(d["threshold"]) for d in data if isinstance(d, dict) and "threshold" in d}
    if isinstance(data, dict) and isinstance(data.get("labels"), list):
        entries = data["labels"]
        names = [e["name"] if isinstance(e, dict) else str(e) for e in entries]
        thresholds: dict[str, float] = {}
        raw = data.get("thresholds", {})
        if isinstance(raw, dict):
            thresholds = {k: float(v) for k, v in raw.items()}
        elif isinstance(raw, list):
            thresholds = dict(zip(names, map(float, raw), strict=False))
        for e in entries:
            if isinstance(e, dict) and "threshold" in e:
                thresholds[e["name"]] = float(e["threshold"])
        calibration = data.get("calibration")  # clinmm.checkpoint: one LabelCalibration per label, in order
        if isinstance(calibration, list):
            for name, cal in zip(names, calibration, strict=False):
                if isinstance(cal, dict) and "threshold" in cal:
                    thresholds[name] = float(cal["threshold"])
        return names, thresholds
    raise DataError(f"{path}: expected a 'labels' list (with thresholds), got {type(data).__name__}")


def load_model_info(folder: str | Path) -> ModelInfo:
    """Read ``model_card.json``, ``labels.json``, ``config.json``, ``versions.json`` and ``manifest.json``.

    Raises:
        DataError: the folder or a required file is missing or malformed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: checkpoint directory not found")
    card = _read_json(folder / "model_card.json", required=True)
    labels, thresholds = _labels_and_thresholds(_read_json(folder / "labels.json", required=True),
                                                folder / "labels.json")
    manifest = _read_json(folder / "manifest.json", required=False)
    files = manifest.get("files", manifest) if isinstance(manifest, dict) else {}
    sha = files.get("model.safetensors", "") if isinstance(files, dict) else ""
    if isinstance(sha, dict):
        sha = sha.get("sha256", "")
    return ModelInfo(folder=folder, card=card if isinstance(card, dict) else {"text": str(card)}, labels=labels,
                     thresholds=thresholds, config=_read_json(folder / "config.json", required=False),
                     versions=_read_json(folder / "versions.json", required=False), sha256=str(sha))


@dataclass
class ReportHeadline:
    """Headline numbers of a validation report.

    Args:
        path: the report HTML.
        metrics: rows of ``{label, auroc, auroc_low, auroc_high, ...}`` from the report's JSON sidecar (empty when
            the report has none).
        title: the HTML ``<title>``.
    """

    path: Path
    metrics: list[dict[str, Any]]
    title: str = ""


def report_headline(path: str | Path) -> ReportHeadline:
    """Read a report's headline: its sidecar ``<name>.json`` (``headline`` or ``metrics`` list) and ``<title>``.

    Raises:
        DataError: the report file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: validation report not found")
    title_match = re.search(r"<title>(.*?)</title>", path.read_text(encoding="utf-8", errors="replace")[:20000],
                            flags=re.DOTALL | re.IGNORECASE)
    metrics: list[dict[str, Any]] = []
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        data = _read_json(sidecar, required=False)
        rows = data.get("headline") or data.get("metrics") or [] if isinstance(data, dict) else data
        if isinstance(rows, dict):
            rows = [{"label": k, **v} if isinstance(v, dict) else {"label": k, "value": v} for k, v in rows.items()]
        metrics = [r for r in rows if isinstance(r, dict)]
    return ReportHeadline(path=path, metrics=metrics, title=title_match.group(1).strip() if title_match else "")


def feedback_cases(table: ScoresTable, *, manifest: Path | None = None,
                   keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Case rows for :func:`clinmm.feedback.store.build_feedback_manifest`: key, ids, image path, note, subgroups.

    Image paths are absolute so the exported manifest works from any folder.
    """
    wanted = set(map(str, keys)) if keys is not None else None
    out = []
    for key in table.predictions["study_key"].astype(str):
        if wanted is not None and key not in wanted:
            continue
        source = case_source(table, key, manifest=manifest)
        out.append({
            "study_key": key,
            "study_id": source.study_id or key,
            "patient_id": source.identified.get("patient_id", source.study_id or key),
            "image_path": str(source.image_path.resolve()) if source.image_path else "",
            "note_text": source.note_text,
            **source.subgroups,
        })
    return out
