"""clinmm: multimodal (DICOM image + clinical note) diagnosis models you can train, explain, score and validate."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
