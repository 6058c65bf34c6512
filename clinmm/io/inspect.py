"""``clinmm inspect``: one de-identified status row per file of a folder tree, decoded in guarded worker processes.

Every file (any nesting, any name, with or without extension) gets exactly one :class:`~clinmm.io.status.Status`.
Decoding runs in worker processes (:func:`clinmm.io.worker.guarded_map`): a file whose worker crashes (e.g. a
segfault in a C decoder) or overruns its deadline is ``decode_error`` with detail ``worker:crashed:…`` /
``worker:deadline:…``, and the walk continues. Rows carry no DICOM content that could identify a patient: only
statuses, SOP class / transfer syntax UIDs, modality, sizes, decoder names, Annex E-filtered display fields and
salted study / series keys.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.uid import UID

from clinmm.errors import IngestError
from clinmm.io.dicom import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, read_dicom
from clinmm.io.load import iter_files
from clinmm.io.status import Status
from clinmm.io.worker import WorkerFailure, guarded_map

__all__ = ["FileRow", "InspectSummary", "probe_file", "inspect_folder", "run_inspect", "ROW_FIELDS"]

logger = logging.getLogger(__name__)


@dataclass
class FileRow:
    """One file's inspection result (safe to export).

    Args:
        path: path relative to the inspected root (the operator's own name for the file).
        status: one :class:`~clinmm.io.status.Status` value.
        detail: machine-readable detail (transfer syntax UID for ``no_decoder``, limits, exception class names).
        size_bytes: file size.
        modality: Modality (after the Annex E filter).
        sop_class_uid: SOP Class UID.
        sop_class: its name.
        transfer_syntax_uid: Transfer Syntax UID.
        transfer_syntax: its name.
        decoder: pydicom plugins that can decode it (``native`` for uncompressed), "" when none.
        photometric: PhotometricInterpretation.
        rows: Rows.
        columns: Columns.
        frames: NumberOfFrames (1 when absent).
        body_part: BodyPartExamined (after the Annex E filter).
        view_position: ViewPosition (after the Annex E filter).
        study_key: salted hash of StudyInstanceUID ("" without salt or UID).
        series_key: salted hash of SeriesInstanceUID.
        geometry: (ImagePositionPatient, ImageOrientationPatient) of a single-frame image, for the series check;
            not written to the CSV.
    """

    path: str
    status: str
    detail: str = ""
    size_bytes: int = 0
    modality: str = ""
    sop_class_uid: str = ""
    sop_class: str = ""
    transfer_syntax_uid: str = ""
    transfer_syntax: str = ""
    decoder: str = ""
    photometric: str = ""
    rows: int | str = ""
    columns: int | str = ""
    frames: int | str = ""
    body_part: str = ""
    view_position: str = ""
    study_key: str = ""
    series_key: str = ""
    geometry: tuple | None = field(default=None, repr=False, metadata={"csv": False})


#: CSV columns (``geometry`` — position / orientation for the series check — stays in memory only).
ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FileRow) if f.metadata.get("csv", True))


@dataclass
class InspectSummary:
    """Result of :func:`inspect_folder`.

    Args:
        root: the inspected folder.
        counts: status → number of files (every status of the enum present, zeros included).
        n_files: files seen.
        seconds: wall-clock time of the walk.
        workers: worker processes used.
        out_csv: the CSV written, if any.
        rows: one :class:`FileRow` per file, sorted by path.
    """

    root: str
    counts: dict[str, int]
    n_files: int
    seconds: float
    workers: int
    out_csv: str | None = None
    rows: list[FileRow] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        return self.counts.get(Status.OK.value, 0)

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "n_files": self.n_files, "counts": self.counts, "seconds": round(self.seconds, 3),
                "workers": self.workers, "out_csv": self.out_csv, "series": self.series}

    def format(self) -> str:
        """Human-readable status table."""
        width = max(len(s.value) for s in Status)
        lines = [f"{self.n_files} files in {self.seconds:.1f}s ({self.workers} workers)"]
        lines += [f"  {k:<{width}} {v}" for k, v in self.counts.items() if v]
        if self.series:
            bad = [s for s in self.series if s["issues"]]
            lines.append(f"{len(self.series)} series with ok files; {len(bad)} inconsistent")
            lines += [f"  series {s['series_key'] or '?'} ({s['modality']}, {s['n_files']} files): "
                      f"{';'.join(s['issues'])}" for s in bad[:20]]
        if self.out_csv:
            lines.append(f"rows written to {self.out_csv}")
        return "\n".join(lines)


def _safe_int(value: Any) -> int | str:
    try:
        return int(value)
    except (TypeError, ValueError):
        return ""


def probe_file(task: tuple[str, str, bytes | None, int, int]) -> FileRow:
    """Inspect one file; never raises (runs inside a worker).

    Args:
        task: ``(path, root, salt or None, max_file_bytes, max_pixels)``.

    Returns:
        The file's row.
    """
    path, root, salt, max_file_bytes, max_pixels = task
    row = FileRow(path=os.path.relpath(path, root) if root else path, status=Status.OK.value)
    try:
        row.size_bytes = os.stat(path).st_size
    except OSError:
        pass

    def fill(ds: Any) -> None:
        from clinmm.io.decoders import decoder_for
        from clinmm.io.deid import deidentified_meta
        from clinmm.io.dicom import _sop_class, _transfer_syntax
        from clinmm.io.keys import study_key

        try:
            meta = deidentified_meta(ds)
            row.modality = str(meta.get("Modality", ""))
            row.body_part = str(meta.get("BodyPartExamined", ""))
            row.view_position = str(meta.get("ViewPosition", ""))
            row.photometric = str(meta.get("PhotometricInterpretation", ""))
            row.rows = _safe_int(meta.get("Rows", ""))
            row.columns = _safe_int(meta.get("Columns", ""))
            row.frames = _safe_int(meta.get("NumberOfFrames", 1)) if "PixelData" in ds else ""
            row.sop_class_uid = _sop_class(ds)
            row.sop_class = UID(row.sop_class_uid).name if row.sop_class_uid else ""
            row.transfer_syntax_uid = _transfer_syntax(ds)
            if row.transfer_syntax_uid:
                row.transfer_syntax = UID(row.transfer_syntax_uid).name
                row.decoder = ", ".join(decoder_for(row.transfer_syntax_uid)[1])
            from clinmm.io.dicom import _float_list

            if "PerFrameFunctionalGroupsSequence" not in ds:
                pos = _float_list(ds.get("ImagePositionPatient", None), 3)
                ori = _float_list(ds.get("ImageOrientationPatient", None), 6)
                if pos is not None and ori is not None:
                    row.geometry = (tuple(pos), tuple(ori))
            if salt:
                study = str(ds.get("StudyInstanceUID", "") or "")
                series = str(ds.get("SeriesInstanceUID", "") or "")
                row.study_key = study_key(study, salt=salt) if study else ""
                row.series_key = study_key(series, salt=salt) if series else ""
        except Exception as err:  # a malformed field must not lose the row
            logger.debug("%s: header fields incomplete (%s)", row.path, type(err).__name__)

    try:
        read_dicom(path, max_file_bytes=max_file_bytes, max_pixels=max_pixels, on_header=fill)
    except IngestError as err:
        row.status, row.detail = str(err.status), err.detail
    except MemoryError:
        row.status, row.detail = Status.TOO_LARGE.value, "memory"
    except Exception as err:  # the per-file guard: nothing escapes
        row.status, row.detail = Status.DECODE_ERROR.value, f"unexpected:{type(err).__name__}"
    return row


def _failed_row(task: tuple[str, str, bytes | None, int, int], failure: WorkerFailure) -> FileRow:
    path, root = task[0], task[1]
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    return FileRow(path=os.path.relpath(path, root) if root else path, status=Status.DECODE_ERROR.value,
                   detail=f"worker:{failure.reason}:{failure.detail}", size_bytes=size)


def _series_checks(rows: list[FileRow]) -> list[dict[str, Any]]:
    """Geometry check (:func:`clinmm.io.series.sort_slices`) of every series with more than one ok file."""
    from clinmm.io.series import sort_slices

    groups: dict[tuple[str, str], list[FileRow]] = {}
    for row in rows:
        if row.status == Status.OK.value and row.series_key:
            groups.setdefault((row.study_key, row.series_key), []).append(row)
    out = []
    for (study, series), members in sorted(groups.items()):
        issues: list[str] = []
        if len(members) > 1 and all(m.geometry is not None and m.frames in (1, "") for m in members):
            import numpy as np

            geo = sort_slices([np.asarray(m.geometry[0]) for m in members],  # type: ignore[index]
                              [np.asarray(m.geometry[1]) for m in members])  # type: ignore[index]
            issues = geo.issues
            if len({(m.rows, m.columns) for m in members}) > 1:
                issues = [*issues, "mixed_shape"]
        out.append({"study_key": study, "series_key": series, "modality": members[0].modality,
                    "n_files": len(members), "issues": issues})
    return out


def _write_csv(rows: list[FileRow], out_csv: Path) -> None:
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({name: getattr(row, name) for name in ROW_FIELDS})
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out_csv)


def inspect_folder(
    root: str | os.PathLike[str],
    *,
    out_csv: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    salt: bytes | None = None,
    deadline_s: float = 60.0,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> InspectSummary:
    """Give every file under ``root`` a status; optionally write one de-identified CSV row per file.

    Args:
        root: a folder (any nesting) or a single file.
        out_csv: CSV to write atomically (columns :data:`ROW_FIELDS`); None writes nothing.
        workers: decode processes (default: CPU count, at most 8); 0 decodes in this process (no crash guard).
        progress: show a progress bar on stderr.
        salt: installation salt for study / series keys (keys are empty without it).
        deadline_s: seconds one file may take before its worker is killed (``decode_error``).
        max_file_bytes: per-file size bound.
        max_pixels: per-file pixel bound.

    Returns:
        The :class:`InspectSummary` (counts per status, rows).
    """
    start = time.monotonic()
    root_path = Path(root)
    files = iter_files(root_path)
    base = os.fspath(root_path if root_path.is_dir() else root_path.parent)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    workers = min(workers, len(files)) if files else 0
    tasks = [(os.fspath(f), base, salt, max_file_bytes, max_pixels) for f in files]
    rows: list[FileRow | None] = [None] * len(tasks)
    from tqdm import tqdm

    with tqdm(total=len(tasks), disable=not progress, unit="file", desc="inspect", leave=False) as bar:
        for index, row in guarded_map(probe_file, tasks, on_failure=_failed_row, workers=workers,
                                      deadline_s=deadline_s):
            rows[index] = row
            logger.debug("%s: %s %s", row.path, row.status, row.detail)
            bar.update(1)
    done = [r for r in rows if r is not None]
    done.sort(key=lambda r: r.path)
    counts = Counter(r.status for r in done)
    summary = InspectSummary(
        root=os.fspath(root_path),
        counts={s.value: counts.get(s.value, 0) for s in Status},
        n_files=len(done),
        seconds=time.monotonic() - start,
        workers=workers,
        rows=done,
        series=_series_checks(done),
    )
    if out_csv is not None:
        _write_csv(done, Path(out_csv))
        summary.out_csv = os.fspath(out_csv)
    logger.info("inspected %d files under %s: %s", summary.n_files, summary.root,
                {k: v for k, v in summary.counts.items() if v})
    return summary


def run_inspect(
    path: str | os.PathLike[str],
    *,
    out_csv: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    deadline_s: float = 60.0,
    salt_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> InspectSummary:
    """What ``clinmm inspect`` runs: load (or create) the installation salt, then :func:`inspect_folder`.

    Args:
        path: folder or file to inspect.
        out_csv: CSV to write (None: none).
        workers: decode processes.
        deadline_s: per-file deadline.
        salt_file: salt location (default :func:`clinmm.io.keys.default_salt_path`).
        progress: progress bar on stderr.

    Returns:
        The summary.
    """
    from clinmm.io.keys import default_salt_path, load_or_create_salt

    salt = load_or_create_salt(salt_file or default_salt_path())
    return inspect_folder(path, out_csv=out_csv, workers=workers, progress=progress, salt=salt, deadline_s=deadline_s)
