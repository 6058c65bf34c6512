"""What ingestion hands to the rest of clinmm: an image volume with its geometry, and its provenance.

These dataclasses are the contract between ``clinmm.io`` and the data / model / scoring / dashboard code.
They carry no PHI: ``meta`` holds only de-identified, non-identifying fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageVolume", "Provenance"]


@dataclass
class Provenance:
    """How a study's image was built (written beside each prediction; no PHI).

    Args:
        files: paths (as given by the operator, relative to the input root where known) of the files used.
        series_key: salted hash of the chosen SeriesInstanceUID.
        series_rule: the documented rule that chose this series (e.g. ``"frontal view: ViewPosition=PA"``).
        transforms: ordered pixel-pipeline steps applied (e.g. ``["rescale", "voi_window", "monochrome1_invert"]``).
        clinmm_version: clinmm version.
        pydicom_version: pydicom version.
        transfer_syntaxes: transfer syntax UIDs of the files used.
    """

    files: list[str] = field(default_factory=list)
    series_key: str = ""
    series_rule: str = ""
    transforms: list[str] = field(default_factory=list)
    clinmm_version: str = ""
    pydicom_version: str = ""
    transfer_syntaxes: list[str] = field(default_factory=list)


@dataclass
class ImageVolume:
    """A decoded 2D image or 3D series.

    Args:
        pixels: (S, H, W) float32 modality values (after Modality LUT / rescale; HU for CT), oriented so that
            *higher means brighter on display* (MONOCHROME1 values are negated). S = 1 for a 2D image.
            This is what the model's intensity mapping (``DataConfig.intensity``) starts from.
        display: (S, H, W) float32 in [0, 1]: the display image after VOI LUT / window and MONOCHROME1 inversion,
            in the standard's order. For people, never for the model.
        spacing: (slice, row, column) spacing in mm (slice spacing from geometry; 1.0 where unknown).
        modality: DICOM Modality (e.g. ``"CR"``, ``"DX"``, ``"CT"``).
        meta: de-identified, non-identifying fields only (e.g. ``BodyPartExamined``, ``ViewPosition``,
            ``Manufacturer``, ``PhotometricInterpretation``, window centre/width).
        provenance: how it was built.
    """

    pixels: np.ndarray
    display: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    modality: str = ""
    meta: dict[str, str | float | int] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]
