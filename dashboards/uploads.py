"""Uploaded studies: written to a private temporary folder, unpacked safely, and deleted after scoring."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["UploadError", "StagedUpload", "staged_upload", "MAX_ZIP_MEMBERS", "MAX_UNPACKED_BYTES"]

logger = logging.getLogger(__name__)

MAX_ZIP_MEMBERS = 2000
MAX_UNPACKED_BYTES = 2 * 1024**3


class UploadError(ValueError):
    """An upload cannot be staged (bad zip, unsafe member path, too large); names the upload, not its content."""


@dataclass(frozen=True)
class StagedUpload:
    """An upload on disk for the duration of a ``with staged_upload(...)`` block.

    Args:
        image_path: the DICOM file, or the folder holding an unpacked series.
        folder: the private temporary folder (removed on exit).
        digest: sha256 of the uploaded bytes (identifies the upload in the audit log; not PHI).
    """

    image_path: Path
    folder: Path
    digest: str


def _safe_members(archive: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise UploadError(f"{name}: {len(members)} files in the zip, more than the limit of {MAX_ZIP_MEMBERS}")
    total = sum(m.file_size for m in members)
    if total > MAX_UNPACKED_BYTES:
        raise UploadError(f"{name}: unpacks to {total} bytes, more than the limit of {MAX_UNPACKED_BYTES}")
    for m in members:
        path = PurePosixPath(m.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in m.filename:
            raise UploadError(f"{name}: unsafe path in zip member {m.filename!r}")
    return members


@contextlib.contextmanager
def staged_upload(name: str, data: bytes) -> Iterator[StagedUpload]:
    """Write an uploaded DICOM file or zip of a series into a fresh private temp folder; delete it afterwards.

    Args:
        name: the uploaded file's name (only its suffix is used).
        data: its bytes.

    Raises:
        UploadError: empty upload, a broken or unsafe zip.
    """
    if not data:
        raise UploadError(f"{name}: empty upload")
    folder = Path(tempfile.mkdtemp(prefix="clinmm-upload-"))  # mode 0700
    try:
        if name.lower().endswith(".zip"):
            series = folder / "series"
            series.mkdir()
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    for member in _safe_members(archive, name):
                        target = series / f"{len(list(series.iterdir())):05d}.dcm"
                        with archive.open(member) as src, target.open("wb") as dst:
                            shutil.copyfileobj(src, dst)
            except zipfile.BadZipFile as err:
                raise UploadError(f"{name}: not a valid zip file") from err
            image_path = series
        else:
            image_path = folder / "upload.dcm"
            image_path.write_bytes(data)
        yield StagedUpload(image_path=image_path, folder=folder, digest=hashlib.sha256(data).hexdigest())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        logger.debug("upload folder removed")
