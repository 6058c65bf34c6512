"""What to score: a folder tree of DICOM files grouped into studies by header, or a manifest, plus the notes join.

A folder (any nesting, files without extension) is listed in sorted order; every file's header is read with
``stop_before_pixels`` (:func:`clinmm.io.dicom.read_header`) in worker processes; files are grouped by
StudyInstanceUID. A file whose header cannot be read belongs to no study and is reported in ``errors.csv`` only.
A manifest row is one study whose files are those under its ``image_path`` (a file or a series folder).

Studies are ordered by their first file's relative path (manifest: by row), so the list — and therefore the output
shards — is the same on every run over the same input.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clinmm.errors import ClinmmError, ConfigError, IngestError, ManifestError
from clinmm.io.keys import study_key
from clinmm.io.status import Status

__all__ = ["FileHeader", "StudyInput", "Inventory", "NotesIndex", "scan_file", "discover_folder", "discover_manifest",
           "read_notes", "error_message"]

logger = logging.getLogger(__name__)


def error_message(err: IngestError) -> str:
    """The human part of an :class:`IngestError` without its path and detail (no DICOM content either way)."""
    text = str(err)
    if err.path and text.startswith(f"{err.path}: "):
        text = text[len(err.path) + 2:]
    if err.detail and text.endswith(f" ({err.detail})"):
        text = text[: -len(err.detail) - 3]
    return text


@dataclass
class FileHeader:
    """One file's header scan (UIDs and accession are for grouping / joining only, never written out).

    Args:
        path: absolute path.
        rel: path relative to the input root (what outputs show).
        status: ``ok`` or a :class:`~clinmm.io.status.Status` value.
        detail: machine-readable detail of a non-ok status.
        message: short human message of a non-ok status.
        study_uid: StudyInstanceUID ("" when unreadable).
        accession: AccessionNumber ("" when absent).
    """

    path: str
    rel: str
    status: str = Status.OK.value
    detail: str = ""
    message: str = ""
    study_uid: str = ""
    accession: str = ""


@dataclass
class StudyInput:
    """One study to score.

    Args:
        index: position in the sorted study list (decides the shard).
        key: salted study key (from StudyInstanceUID; from the manifest study_id when no header is readable).
        source_path: relative path of the study (its single file, its files' common folder, or the manifest
            ``image_path``).
        files: the study's files (header scan result; statuses other than ``ok`` are final).
        note: the note text joined to the study, or None.
        study_id: manifest ``study_id`` (manifest input only).
    """

    index: int
    key: str
    source_path: str
    files: list[FileHeader] = field(default_factory=list)
    note: str | None = None
    study_id: str | None = None


@dataclass
class Inventory:
    """Every study to score and every file that belongs to no study (unreadable headers).

    Args:
        studies: in shard order.
        orphans: files without a readable header (reported in errors.csv).
        from_manifest: True when INPUT was a manifest.
        n_files: files seen.
    """

    studies: list[StudyInput]
    orphans: list[FileHeader]
    from_manifest: bool
    n_files: int


class NotesIndex:
    """Notes CSV (``study_instance_uid, accession_number, note_text``) joined by StudyInstanceUID, else accession.

    Args:
        by_uid: StudyInstanceUID → note.
        by_accession: AccessionNumber → note.
    """

    def __init__(self, *, by_uid: dict[str, str] | None = None, by_accession: dict[str, str] | None = None) -> None:
        self.by_uid = by_uid or {}
        self.by_accession = by_accession or {}

    def lookup(self, study_uid: str, accession: str) -> str | None:
        if study_uid and study_uid in self.by_uid:
            return self.by_uid[study_uid]
        if accession and accession in self.by_accession:
            return self.by_accession[accession]
        return None

    def __len__(self) -> int:
        return max(len(self.by_uid), len(self.by_accession))


def read_notes(path: str | os.PathLike[str]) -> NotesIndex:
    """Read a notes CSV.

    Raises:
        ConfigError: missing file, no ``note_text`` column, or neither join column.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: notes file not found")
    by_uid: dict[str, str] = {}
    by_acc: dict[str, str] = {}
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if "note_text" not in cols or not cols & {"study_instance_uid", "accession_number"}:
            raise ConfigError(f"{p}: notes CSV needs note_text and study_instance_uid and/or accession_number "
                              f"columns; found {sorted(cols)}")
        for row in reader:
            text = row.get("note_text") or ""
            if not text.strip():
                continue
            uid = (row.get("study_instance_uid") or "").strip()
            acc = (row.get("accession_number") or "").strip()
            if uid:
                by_uid.setdefault(uid, text)
            if acc:
                by_acc.setdefault(acc, text)
    return NotesIndex(by_uid=by_uid, by_accession=by_acc)


def _read_uids(path: str) -> tuple[str, str]:
    """StudyInstanceUID and AccessionNumber of a parseable file that failed a later header check."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "AccessionNumber"])
        return str(ds.get("StudyInstanceUID", "") or "").strip(), str(ds.get("AccessionNumber", "") or "").strip()
    except Exception:  # unreadable: the file stays an orphan
        return "", ""


def scan_file(path: str, rel: str, max_file_bytes: int) -> FileHeader:
    """Header scan of one file (runs in a worker process)."""
    from clinmm.io.dicom import pydicom_quiet, read_header

    out = FileHeader(path=path, rel=rel)
    try:
        ds = read_header(path, max_file_bytes=max_file_bytes, stop_before_pixels=True)
    except IngestError as err:
        out.status, out.detail, out.message = str(err.status), err.detail, error_message(err)
        if err.status in (Status.UNSUPPORTED_SOP_CLASS.value, Status.TOO_LARGE.value):
            out.study_uid, out.accession = _read_uids(path) if err.status != Status.TOO_LARGE.value else ("", "")
        return out
    with pydicom_quiet():  # pydicom's validation warnings would quote a malformed value (PHI)
        out.study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        out.accession = str(ds.get("AccessionNumber", "") or "").strip()
    return out


def _scan_star(args: tuple[str, str, int]) -> FileHeader:
    return scan_file(*args)


def _scan_failed(args: tuple[str, str, int], failure) -> FileHeader:
    return FileHeader(path=args[0], rel=args[1], status=Status.DECODE_ERROR.value,
                      detail=f"worker_{failure.reason}:{failure.detail}", message="header reader crashed or timed out")


def _scan_all(jobs: list[tuple[str, str, int]], workers: int, deadline_s: float = 30.0) -> list[FileHeader]:
    """Header scans in :func:`clinmm.io.worker.guarded_map` workers (a crash or hang costs one file), input order."""
    if workers <= 0 or len(jobs) < 64:
        return [scan_file(*j) for j in jobs]
    from clinmm.io.worker import guarded_map

    out: list[FileHeader | None] = [None] * len(jobs)
    for index, header in guarded_map(_scan_star, jobs, on_failure=_scan_failed, workers=workers,
                                     deadline_s=deadline_s, start_method="fork"):
        out[index] = header
    return out  # type: ignore[return-value]


def _iter_files(root: Path) -> list[Path]:
    from clinmm.io.load import iter_files

    return iter_files(root)


def _common_folder(rels: Sequence[str]) -> str:
    if len(rels) == 1:
        return rels[0]
    common = os.path.commonpath(rels)
    return common or "."


def discover_folder(root: str | os.PathLike[str], *, salt: bytes, notes: NotesIndex | None = None,
                    workers: int = 0, max_file_bytes: int = 2 * 1024**3, deadline_s: float = 30.0) -> Inventory:
    """Group every file under ``root`` into studies by StudyInstanceUID.

    Args:
        root: the input folder.
        salt: installation salt for study keys.
        notes: notes to join, or None.
        workers: header-scan processes (0 = in this process).
        max_file_bytes: files above it are ``too_large`` without being read.
        deadline_s: per-file header-read deadline (a hung or crashing reader gives ``decode_error``).

    Raises:
        ConfigError: ``root`` is not a folder or holds no file.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: input is neither a folder nor a manifest (.csv/.parquet)")
    files = _iter_files(root)
    if not files:
        raise ConfigError(f"{root}: no files under the input folder")
    jobs = [(os.fspath(f), f.relative_to(root).as_posix(), max_file_bytes) for f in files]
    headers = _scan_all(jobs, workers, deadline_s)
    groups: dict[str, list[FileHeader]] = {}
    orphans: list[FileHeader] = []
    for h in headers:
        if h.study_uid:
            groups.setdefault(h.study_uid, []).append(h)
        elif h.status == Status.OK.value:
            # A valid image without StudyInstanceUID: a study of its own, keyed by its path.
            groups.setdefault(f"path:{h.rel}", []).append(h)
        else:
            orphans.append(h)
    ordered = sorted(groups.items(), key=lambda kv: kv[1][0].rel)  # headers are already in sorted path order
    studies = []
    for i, (uid, hs) in enumerate(ordered):
        accession = next((h.accession for h in hs if h.accession), "")
        note = notes.lookup(uid, accession) if notes is not None else None
        studies.append(StudyInput(index=i, key=study_key(uid, salt=salt),
                                  source_path=_common_folder([h.rel for h in hs]), files=hs, note=note))
    logger.info("found %d file(s) in %d stud(y/ies) under the input folder (%d unreadable)", len(files),
                len(studies), len(orphans))
    return Inventory(studies=studies, orphans=orphans, from_manifest=False, n_files=len(files))


def discover_manifest(path: str | os.PathLike[str], *, salt: bytes, notes: NotesIndex | None = None,
                      workers: int = 0, max_file_bytes: int = 2 * 1024**3, deadline_s: float = 30.0,
                      split: str | None = None) -> Inventory:
    """One study per manifest row, in row order; its files are those under ``image_path``.

    Args:
        split: keep only the rows of this ``split`` (None: every row).

    Raises:
        ManifestError: unreadable manifest (from :func:`clinmm.data.manifest.read_manifest`), or ``split`` given
            and no row has it.
    """
    import pandas as pd

    from clinmm.data.manifest import read_manifest

    path = Path(path)
    try:
        manifest = read_manifest(path)
    except ClinmmError as err:
        if "no label_<finding> columns" not in str(err):
            raise
        manifest = None  # an unlabelled manifest is fine for scoring: read it without labels below
    if manifest is None:
        df = (pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq")
              else pd.read_csv(path, dtype=str, keep_default_na=False))
        rows = [(str(r["study_id"]), r.get("image_path") or None, r.get("note_text") or None)
                for r in df.to_dict(orient="records") if split is None or str(r.get("split", "")) == split]
        rows = [(s, None if img is None else (Path(img) if Path(img).is_absolute() else path.parent / img), n)
                for s, img, n in rows]
    else:
        rows = [(r.study_id, r.image_path, r.note_text) for r in manifest.records
                if split is None or r.split == split]
    if split is not None and not rows:
        raise ManifestError(f"{path}: no row has split {split!r}")
    root = path.parent
    jobs: list[tuple[str, str, int]] = []
    owners: list[int] = []
    missing: dict[int, FileHeader] = {}
    for i, (_, image, _) in enumerate(rows):
        if image is None:
            continue
        image = Path(image)
        rel_base = os.path.relpath(image, root)
        if not image.exists():
            missing[i] = FileHeader(path=os.fspath(image), rel=Path(rel_base).as_posix(), status=Status.NOT_DICOM.value,
                                    detail="missing", message="image_path does not exist")
            continue
        for f in _iter_files(image):
            jobs.append((os.fspath(f), Path(os.path.relpath(f, root)).as_posix(), max_file_bytes))
            owners.append(i)
    headers = _scan_all(jobs, workers, deadline_s)
    per_row: dict[int, list[FileHeader]] = {}
    for owner, h in zip(owners, headers):
        per_row.setdefault(owner, []).append(h)
    studies = []
    for i, (study_id, image, note) in enumerate(rows):
        hs = per_row.get(i, []) + ([missing[i]] if i in missing else [])
        uid = next((h.study_uid for h in hs if h.study_uid), "")
        if note is None and notes is not None and uid:
            note = notes.lookup(uid, next((h.accession for h in hs if h.accession), ""))
        key = study_key(uid if uid else f"study_id:{study_id}", salt=salt)
        source = Path(os.path.relpath(image, root)).as_posix() if image is not None else ""
        studies.append(StudyInput(index=i, key=key, source_path=source, files=hs, note=note, study_id=study_id))
    n_files = len(jobs) + len(missing)
    logger.info("manifest: %d stud(y/ies), %d image file(s)", len(studies), n_files)
    return Inventory(studies=studies, orphans=[], from_manifest=True, n_files=n_files)
