"""Synthetic paired DICOM + clinical-note data with known ground truth (``clinmm sample-data``).

- :mod:`~clinmm.data.synthetic.images`: chest radiograph / CT slab rendering with faint lesions and distractors;
- :mod:`~clinmm.data.synthetic.notes`: notes with affirmed / negated / uncertain mentions and their spans;
- :mod:`~clinmm.data.synthetic.dicom_writer`: valid CR, DX and CT DICOM instances;
- :mod:`~clinmm.data.synthetic.generate`: the data set (manifest, notes, DICOM, ground truth).
"""

from __future__ import annotations

from clinmm.data.synthetic.generate import (
    GENERATOR_VERSION,
    LABELS,
    MANIFEST_COLUMNS,
    SITES,
    SyntheticOptions,
    SyntheticSummary,
    generate_sample_data,
)
from clinmm.data.synthetic.images import LesionParams

__all__ = [
    "GENERATOR_VERSION",
    "LABELS",
    "MANIFEST_COLUMNS",
    "SITES",
    "LesionParams",
    "SyntheticOptions",
    "SyntheticSummary",
    "generate_sample_data",
]
