"""``load_image``: a DICOM file or a series folder → :class:`~clinmm.io.study.ImageVolume` (the ingestion contract).

A file is read by :func:`clinmm.io.dicom.read_dicom` (strict read, allow-listed SOP class, bounds, pixel pipeline).
A folder (any nesting, files without extension) is grouped by StudyInstanceUID / SeriesInstanceUID from headers
only, one image series is chosen by :func:`clinmm.io.series.choose_series`, and only its files are decoded; slices
are stacked in the order of their position along the slice normal, with the slice spacing from that geometry.
Enhanced multi-frame files with per-frame positions are ordered the same way.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from clinmm.errors import IngestError
from clinmm.io.dicom import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    pydicom_quiet,
    read_dicom,
    read_header,
)
from clinmm.io.keys import study_key
from clinmm.io.provenance import versions
from clinmm.io.series import SeriesHeader, check_series, choose_series, sort_slices
from clinmm.io.status import Status
from clinmm.io.study import ImageVolume, Provenance

__all__ = ["load_image", "iter_files", "build_volume"]

logger = logging.getLogger(__name__)


def iter_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every regular file under ``root`` (any nesting, any name), sorted; a file path gives itself."""
    p = Path(root)
    if p.is_file():
        return [p]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if f.is_file():
                out.append(f)
    return out


def _ordered_unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _header(path: Path, *, max_file_bytes: int) -> SeriesHeader:
    with pydicom_quiet():  # value conversion below may warn, quoting values
        return _header_fields(path, max_file_bytes=max_file_bytes)


def _header_fields(path: Path, *, max_file_bytes: int) -> SeriesHeader:
    from clinmm.io.dicom import _float_list  # shared parsing helper

    ds = read_header(path, max_file_bytes=max_file_bytes, stop_before_pixels=True)
    try:
        series_number = int(ds.get("SeriesNumber", None)) if ds.get("SeriesNumber", None) not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    try:
        image_type = tuple(str(v).upper() for v in (ds.get("ImageType", None) or ()))
    except TypeError:
        image_type = ()
    return SeriesHeader(
        path=os.fspath(path),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        modality=str(ds.get("Modality", "") or "").upper(),
        view_position=str(ds.get("ViewPosition", "") or "").strip().upper(),
        image_type=image_type,
        orientation=_float_list(ds.get("ImageOrientationPatient", None), 6),
        series_number=series_number,
    )


def build_volume(
    images: list[DecodedImage],
    files: list[str],
    *,
    path: str,
    rule: str,
    salt: bytes | None,
) -> ImageVolume:
    """Stack decoded files of ONE series into a checked, geometrically ordered :class:`ImageVolume` with provenance.

    Args:
        images: decoded files of the chosen series (one multi-frame file, or single-frame slices in any order).
        files: their paths as they should appear in the provenance (same order as ``images``).
        path: the study's source (file or folder), for error messages.
        rule: the series-choice rule that picked them (``SeriesChoice.rule``).
        salt: installation salt for the series key (None: empty key).

    Raises:
        IngestError: ``inconsistent_series`` (missing / duplicate / non-uniform slices, mixed orientation or shape).
    """
    first = images[0]
    if len(images) == 1:
        pixels, display = first.pixels, first.display  # (F, H, W)
        spacing = first.slice_thickness or 1.0
        if pixels.shape[0] > 1 and first.positions is not None and first.orientation is not None:
            geo = sort_slices(list(first.positions), [first.orientation] * pixels.shape[0], default_spacing=spacing)
            check_series(geo, path=path)
            pixels, display, spacing = pixels[geo.order], display[geo.order], geo.spacing
    else:
        shapes = {img.pixels.shape for img in images}
        if len(shapes) != 1 or next(iter(shapes))[0] != 1:
            detail = "multi_frame_in_series" if any(s[0] != 1 for s in shapes) else "mixed_shape"
            raise IngestError(Status.INCONSISTENT_SERIES.value, detail, path=path, message="slices differ in shape")
        positions = [None if img.positions is None else img.positions[0] for img in images]
        geo = sort_slices(positions, [img.orientation for img in images], default_spacing=first.slice_thickness or 1.0)
        check_series(geo, path=path)
        images = [images[i] for i in geo.order]
        files = [files[i] for i in geo.order]
        pixels = np.concatenate([img.pixels for img in images], axis=0)  # (S, H, W)
        display = np.concatenate([img.display for img in images], axis=0)  # (S, H, W)
        spacing = geo.spacing
        if not all(img.voi_applied for img in images):
            # Some slices had no header VOI: one min-max over the whole volume keeps slices comparable.
            lo, hi = float(pixels.min()), float(pixels.max())
            display = ((pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)).astype(np.float32)
    row, col = first.pixel_spacing or (1.0, 1.0)
    clinmm_version, pydicom_version = versions()
    prov = Provenance(
        files=files,
        series_key=study_key(first.series_uid, salt=salt) if (salt and first.series_uid) else "",
        series_rule=rule,
        transforms=_ordered_unique([t for img in images for t in img.transforms]),
        clinmm_version=clinmm_version,
        pydicom_version=pydicom_version,
        transfer_syntaxes=_ordered_unique([img.transfer_syntax_uid for img in images]),
    )
    meta = dict(first.meta)
    meta["SliceCount"] = int(pixels.shape[0])
    return ImageVolume(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        display=np.ascontiguousarray(display, dtype=np.float32),
        spacing=(float(spacing), float(row), float(col)),
        modality=first.modality,
        meta=meta,
        provenance=prov,
    )


def load_image(
    path: str | os.PathLike[str],
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    salt: bytes | None = None,
) -> ImageVolume:
    """Load a DICOM file or a series folder as an :class:`~clinmm.io.study.ImageVolume`.

    Args:
        path: a DICOM file, or a folder holding one study (any nesting, any file names).
        max_file_bytes: per-file size bound (checked before reading).
        max_pixels: per-file Rows × Columns × Frames × SamplesPerPixel bound (checked before decoding); a folder's
            chosen series is also bounded by it in total.
        salt: installation salt (:func:`clinmm.io.keys.load_or_create_salt`); with it the provenance carries the
            salted series key, without it that key is empty.

    Returns:
        ``pixels`` (S, H, W) float32 modality values (higher = brighter), ``display`` (S, H, W) in [0, 1],
        spacing (slice, row, column) mm, modality, de-identified meta and provenance.

    Raises:
        IngestError: with a :class:`~clinmm.io.status.Status` value and detail (never PHI).
    """
    p = Path(path)
    spath = os.fspath(p)
    if p.is_file():
        img = read_dicom(p, max_file_bytes=max_file_bytes, max_pixels=max_pixels)
        return build_volume([img], [p.name], path=spath, rule="single file", salt=salt)
    if not p.is_dir():
        raise IngestError(Status.NOT_DICOM.value, "missing", path=spath, message="no such file or folder")
    files = iter_files(p)
    headers: list[SeriesHeader] = []
    failures: Counter[str] = Counter()
    for f in files:
        try:
            headers.append(_header(f, max_file_bytes=max_file_bytes))
        except IngestError as err:
            failures[err.status] += 1
    if failures:
        logger.info("%s: skipped %d file(s) while grouping: %s", spath, sum(failures.values()), dict(failures))
    if not headers:
        status = failures.most_common(1)[0][0] if failures else Status.NOT_DICOM.value
        raise IngestError(status, "no_image_file_in_folder", path=spath, message="no usable DICOM image in folder")
    studies = {h.study_uid for h in headers}
    if len(studies) > 1:
        raise IngestError(Status.INCONSISTENT_SERIES.value, f"multiple_studies:{len(studies)}", path=spath,
                          message="folder holds more than one study")
    groups: dict[str, list[SeriesHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    choice = choose_series(groups)
    chosen = groups[choice.series_uid]
    images: list[DecodedImage] = []
    total = 0
    for h in chosen:
        img = read_dicom(h.path, max_file_bytes=max_file_bytes, max_pixels=max_pixels)
        total += img.pixels.size
        if total > max_pixels:
            raise IngestError(Status.TOO_LARGE.value, f"series_pixels>{max_pixels}", path=spath,
                              message="series too large")
        images.append(img)
    rel = [os.path.relpath(h.path, spath) for h in chosen]
    return build_volume(images, rel, path=spath, rule=choice.rule, salt=salt)
