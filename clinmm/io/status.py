"""The fixed set of per-file ingestion statuses. Every file gets exactly one."""

from __future__ import annotations

from enum import Enum

__all__ = ["Status"]


class Status(str, Enum):
    """Outcome of ingesting one DICOM file (the value is what tables and logs carry)."""

    OK = "ok"
    NOT_DICOM = "not_dicom"
    BAD_HEADER = "bad_header"
    TRUNCATED = "truncated"
    UNSUPPORTED_SOP_CLASS = "unsupported_sop_class"
    NO_PIXEL_DATA = "no_pixel_data"
    NO_DECODER = "no_decoder"
    DECODE_ERROR = "decode_error"
    TOO_LARGE = "too_large"
    INCONSISTENT_SERIES = "inconsistent_series"
    OUT_OF_SCOPE = "out_of_scope"

    def __str__(self) -> str:
        return self.value
