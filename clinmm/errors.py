"""Exceptions raised by clinmm. Every message names the file (or key) and what was wrong, never DICOM content."""

from __future__ import annotations

__all__ = [
    "ClinmmError",
    "ConfigError",
    "CheckpointError",
    "ChecksumError",
    "ManifestError",
    "IngestError",
    "TextModelError",
    "ScoringError",
    "ScopeError",
    "CompareError",
]


class ClinmmError(Exception):
    """Base class of every error clinmm raises on purpose."""


class ConfigError(ClinmmError, ValueError):
    """A configuration file or value is invalid (unknown key, wrong type, value out of range)."""


class CheckpointError(ClinmmError):
    """A checkpoint directory is missing a file, or holds something clinmm cannot load."""


class ChecksumError(CheckpointError):
    """A checkpoint file's sha256 does not match the one recorded in ``manifest.json``."""


class ManifestError(ClinmmError, ValueError):
    """A manifest (CSV/Parquet) lacks a column or holds a value of the wrong kind."""


class TextModelError(ClinmmError):
    """A text encoder cannot be loaded (e.g. a hub name while offline)."""


class ScoringError(ClinmmError):
    """A scoring run cannot start (e.g. another process is writing to the same output folder)."""


class ScopeError(ClinmmError, ValueError):
    """A study lies outside what the model was trained on (modality, view, body part); it is not explained or scored
    unless the caller forces it."""


class CompareError(ClinmmError, ValueError):
    """Fusion-ablation runs cannot be pooled (a folder is not a finished ``clinmm compare`` output, or the runs differ
    in their test studies or configuration)."""


class IngestError(ClinmmError):
    """A DICOM file could not be turned into pixels.

    Args:
        status: one value of :class:`clinmm.io.status.Status` (as its string value).
        detail: short machine-readable detail (e.g. a transfer syntax UID). Never PHI.
        path: the file, as the operator gave it.
    """

    def __init__(self, status: str, detail: str = "", *, path: str = "", message: str = "") -> None:
        self.status = status
        self.detail = detail
        self.path = path
        text = message or status
        super().__init__(f"{path}: {text}" + (f" ({detail})" if detail else "") if path else text)
