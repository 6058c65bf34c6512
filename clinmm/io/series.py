"""Series grouping, geometric slice order and the rule that picks a study's image series.

Slices are ordered by their distance along the slice normal ``n = row × column`` (ImageOrientationPatient),
``d = ImagePositionPatient · n`` — never by InstanceNumber or file name. Slice spacing is the median gap in ``d``.
A series is ``inconsistent_series`` (with a detail) when its slices have mixed orientations or sizes, two slices
share a position (``duplicate_slices:k``), a gap is ≥ 1.5 × the median (``missing_slices:k``, k = slices that
would fill the gaps) or gaps differ by more than 10 % otherwise (``non_uniform_spacing``).

Series choice (:func:`choose_series`), in order — the rule that fired is recorded in the provenance:

1. Localizers / scouts (ImageType contains ``LOCALIZER`` or ``SCOUT``) are never chosen while another series exists.
2. Projection radiography (CR, DX, MG, RF, XA, …): the frontal view — ViewPosition ``PA``, then ``AP``; then any
   view that is not lateral (``LL``, ``RL``, ``LAT``, ``LATERAL``, ``RLD``, ``LLD``); laterals only when nothing
   else exists.
3. Cross-sectional (CT, MR, PT, NM): the axial series (|normal·z| ≥ 0.9) with the most slices; then any series with
   the most slices.
4. Otherwise: the series with the most images.

Ties are broken by SeriesNumber, then by UID, so the choice is deterministic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from clinmm.errors import IngestError
from clinmm.io.status import Status

__all__ = [
    "SeriesHeader",
    "SeriesChoice",
    "SliceGeometry",
    "slice_normal",
    "sort_slices",
    "check_series",
    "choose_series",
    "PROJECTION_MODALITIES",
    "CROSS_SECTIONAL_MODALITIES",
]

logger = logging.getLogger(__name__)

PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX", "RG", "DF"})
CROSS_SECTIONAL_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
_LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "RLD", "LLD", "LLO", "RLO"})
_FRONTAL_ORDER = ("PA", "AP")
_ORIENTATION_TOL = 1e-3
_DUPLICATE_MM = 1e-2
_GAP_FACTOR = 1.5
_UNIFORM_REL = 0.10


@dataclass
class SeriesHeader:
    """What series choice needs from one file's header (UIDs for grouping only, never exported raw).

    Args:
        path: the file.
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        modality: Modality.
        view_position: ViewPosition (upper case).
        image_type: ImageType values (upper case).
        orientation: (6,) ImageOrientationPatient or None.
        series_number: SeriesNumber or None.
    """

    path: str
    study_uid: str
    series_uid: str
    modality: str = ""
    view_position: str = ""
    image_type: tuple[str, ...] = ()
    orientation: np.ndarray | None = None
    series_number: int | None = None

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type or "SCOUT" in self.image_type


@dataclass
class SeriesChoice:
    """The chosen series and why.

    Args:
        series_uid: chosen SeriesInstanceUID (internal; hash it before export).
        rule: the documented rule that fired, with what was passed over (no PHI).
        skipped: number of other series.
    """

    series_uid: str
    rule: str
    skipped: int = 0


@dataclass
class SliceGeometry:
    """Result of ordering slices along the normal.

    Args:
        order: indices into the input, in ascending position along the slice normal.
        spacing: slice spacing in mm (median gap; ``default_spacing`` for one slice).
        issues: problems found (empty when the series is consistent).
    """

    order: list[int]
    spacing: float
    issues: list[str] = field(default_factory=list)


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit slice normal ``row × column`` of a (6,) ImageOrientationPatient."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        raise ValueError("degenerate ImageOrientationPatient")
    return normal / norm


def sort_slices(
    positions: list[np.ndarray | None],
    orientations: list[np.ndarray | None],
    *,
    default_spacing: float = 1.0,
) -> SliceGeometry:
    """Order slices along the slice normal and check the series' geometry.

    Args:
        positions: ImagePositionPatient (3,) per slice (None where missing).
        orientations: ImageOrientationPatient (6,) per slice (None where missing).
        default_spacing: spacing reported for a single slice.

    Returns:
        :class:`SliceGeometry`; ``issues`` lists ``missing_geometry``, ``mixed_orientation``, ``duplicate_slices:k``,
        ``missing_slices:k`` or ``non_uniform_spacing``. The order is by position whenever positions exist.
    """
    n = len(positions)
    if n == 1:
        return SliceGeometry(order=[0], spacing=default_spacing)
    if any(p is None for p in positions) or any(o is None for o in orientations):
        return SliceGeometry(order=list(range(n)), spacing=default_spacing, issues=["missing_geometry"])
    ref = np.asarray(orientations[0])
    issues: list[str] = []
    if any(float(np.max(np.abs(np.asarray(o) - ref))) > _ORIENTATION_TOL for o in orientations):
        issues.append("mixed_orientation")
    try:
        normal = slice_normal(ref)
    except ValueError:
        return SliceGeometry(order=list(range(n)), spacing=default_spacing, issues=["degenerate_orientation"])
    dist = np.asarray([float(np.dot(p, normal)) for p in positions])  # (N,)
    order = [int(i) for i in np.argsort(dist, kind="stable")]
    gaps = np.diff(dist[order])  # (N-1,)
    dup = int(np.sum(gaps < _DUPLICATE_MM))
    if dup:
        issues.append(f"duplicate_slices:{dup}")
    real = gaps[gaps >= _DUPLICATE_MM]
    if real.size == 0:
        return SliceGeometry(order=order, spacing=default_spacing, issues=issues)
    spacing = float(np.median(real))
    big = real >= _GAP_FACTOR * spacing
    if big.any():
        missing = int(np.sum(np.rint(real[big] / spacing) - 1).clip(min=1))
        issues.append(f"missing_slices:{missing}")
    rest = real[~big]
    if rest.size and float(np.max(np.abs(rest - spacing))) > _UNIFORM_REL * spacing:
        issues.append("non_uniform_spacing")
    return SliceGeometry(order=order, spacing=spacing, issues=issues)


def check_series(geometry: SliceGeometry, *, path: str) -> None:
    """Raise ``inconsistent_series`` (detail = the issues, ``;``-joined) when the geometry has any issue."""
    if geometry.issues:
        raise IngestError(Status.INCONSISTENT_SERIES.value, ";".join(geometry.issues), path=path,
                          message="series geometry is inconsistent")


def _tie_key(uid: str, headers: list[SeriesHeader]) -> tuple[int, str]:
    numbers = [h.series_number for h in headers if h.series_number is not None]
    return (min(numbers) if numbers else 1 << 30, uid)


def choose_series(groups: dict[str, list[SeriesHeader]]) -> SeriesChoice:
    """Pick the study's image series by the documented rules (module docstring).

    Args:
        groups: SeriesInstanceUID → headers of its files (one study).

    Returns:
        The :class:`SeriesChoice`, whose ``rule`` says which rule fired and what was skipped.

    Raises:
        ValueError: when ``groups`` is empty.
    """
    if not groups:
        raise ValueError("no series to choose from")
    uids = sorted(groups, key=lambda u: _tie_key(u, groups[u]))
    skipped = len(uids) - 1
    if len(uids) == 1:
        return SeriesChoice(series_uid=uids[0], rule="only series", skipped=0)
    localizers = [u for u in uids if all(h.is_localizer for h in groups[u])]
    pool = [u for u in uids if u not in localizers] or uids
    notes = [f"skipped {len(localizers)} localizer"] if localizers and pool is not uids else []

    def views(u: str) -> set[str]:
        return {h.view_position for h in groups[u]}

    modalities = {h.modality.upper() for u in pool for h in groups[u]}
    if modalities & PROJECTION_MODALITIES:
        for view in _FRONTAL_ORDER:
            hits = [u for u in pool if view in views(u)]
            if hits:
                laterals = sum(1 for u in pool if views(u) & _LATERAL_VIEWS)
                extra = notes + ([f"skipped {laterals} lateral"] if laterals else [])
                return SeriesChoice(hits[0], f"frontal view: ViewPosition={view}" + _suffix(extra), skipped)
        non_lateral = [u for u in pool if not views(u) & _LATERAL_VIEWS]
        if non_lateral:
            return SeriesChoice(non_lateral[0], "projection: first non-lateral view" + _suffix(notes), skipped)
        return SeriesChoice(pool[0], "projection: lateral only" + _suffix(notes), skipped)

    def count(u: str) -> int:
        return len(groups[u])

    if modalities & CROSS_SECTIONAL_MODALITIES:
        axial = []
        for u in pool:
            ori = groups[u][0].orientation
            try:
                if ori is not None and abs(float(slice_normal(ori)[2])) >= 0.9:
                    axial.append(u)
            except ValueError:
                continue
        if axial:
            best = max(axial, key=count)  # max keeps the first of equal counts (tie order above)
            return SeriesChoice(best, f"cross-sectional: largest axial series ({count(best)} images)"
                                + _suffix(notes), skipped)
        best = max(pool, key=count)
        return SeriesChoice(best, f"cross-sectional: largest series ({count(best)} images, none axial)"
                            + _suffix(notes), skipped)
    best = max(pool, key=count)
    return SeriesChoice(best, f"largest series ({count(best)} images)" + _suffix(notes), skipped)


def _suffix(notes: list[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""
