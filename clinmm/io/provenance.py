"""Provenance records: how a study's image was built, written as JSON beside each prediction (no PHI)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
from pathlib import Path

import pydicom

from clinmm.errors import ClinmmError
from clinmm.io.study import Provenance

__all__ = ["versions", "provenance_to_dict", "provenance_from_dict", "write_provenance", "read_provenance"]


def versions() -> tuple[str, str]:
    """(clinmm version, pydicom version) for provenance records."""
    try:
        clinmm_version = importlib.metadata.version("clinmm")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without install
        clinmm_version = "0+unknown"
    return clinmm_version, pydicom.__version__


def provenance_to_dict(prov: Provenance) -> dict:
    """Plain JSON-serialisable dict of a :class:`~clinmm.io.study.Provenance`."""
    return dataclasses.asdict(prov)


def provenance_from_dict(data: dict) -> Provenance:
    """Inverse of :func:`provenance_to_dict`; unknown keys are an error (they mean a newer or foreign record).

    Raises:
        ValueError: naming the unknown key(s).
    """
    known = {f.name for f in dataclasses.fields(Provenance)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown provenance key(s): {', '.join(unknown)}")
    return Provenance(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in data.items()})


def write_provenance(prov: Provenance, path: str | os.PathLike[str]) -> Path:
    """Write ``prov`` as JSON atomically (temp file + fsync + rename) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(provenance_to_dict(prov), fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return p


def read_provenance(path: str | os.PathLike[str]) -> Provenance:
    """Read a record written by :func:`write_provenance`.

    Raises:
        ClinmmError: naming the file when it is not a valid provenance record.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
        return provenance_from_dict(data)
    except (OSError, ValueError, TypeError) as err:
        raise ClinmmError(f"{os.fspath(path)}: invalid provenance record: {err}") from None
