"""Read one DICOM file and turn it into pixels, in the order the standard defines, or a status saying why not.

Pipeline (PS3.3 C.11, PS3.4 N.2), per frame:

1. **Modality LUT** — Modality LUT Sequence or Rescale Slope/Intercept (``pydicom.pixels.apply_modality_lut``), with
   the per-frame Pixel Value Transformation functional group for enhanced multi-frame files.
2. **VOI** — VOI LUT Sequence if present, else the *first* Window Center/Width (per-frame Frame VOI LUT functional
   group for enhanced files) through ``pydicom.pixels.apply_voi`` / ``apply_windowing``. Display is that output
   scaled to [0, 1]. Without a usable VOI, display is the min–max of the modality values.
3. **MONOCHROME1 inversion** — display ``1 - d``; ``pixels`` (the model's input) are the *negated* modality values so
   that, for every photometric interpretation, higher means brighter.

Colour (documented rule): PALETTE COLOR is expanded through its palette (``apply_color_lut``); YBR_FULL /
YBR_FULL_422 are converted to RGB by pydicom (YBR_ICT / YBR_RCT by the JPEG 2000 decoder); RGB is then reduced to
luma with the ITU-R BT.601 weights ``Y = 0.299 R + 0.587 G + 0.114 B``. ``pixels`` are that luma in stored units,
``display`` is luma / (2**BitsStored - 1). No Modality LUT or VOI applies to colour images (PS3.3 C.11.1 / C.11.2
apply to monochrome only).

Every failure is a :class:`clinmm.errors.IngestError` with a :class:`~clinmm.io.status.Status` value and a
machine-readable detail that never contains DICOM content (only UIDs of transfer syntaxes / SOP classes, attribute
keywords and exception class names).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import UID

from clinmm.errors import IngestError
from clinmm.io.status import Status

__all__ = [
    "ALLOWED_SOP_CLASSES",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "read_header",
    "decode_dataset",
    "read_dicom",
    "frame_dataset",
    "luma_bt601",
    "pydicom_quiet",
    "window_display",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 2 * 1024**3
DEFAULT_MAX_PIXELS = 512 * 1024 * 1024

#: Image SOP classes clinmm decodes (radiology images and secondary captures). Everything else — SR, PR, RT (incl.
#: RT Dose / RT Image), SEG, waveforms, encapsulated documents, DICOMDIR, parametric maps, visible-light photography —
#: gets ``unsupported_sop_class`` before any pixel is decoded.
ALLOWED_SOP_CLASSES: dict[str, str] = {
    uid: UID(uid).name
    for uid in (
        pydicom.uid.ComputedRadiographyImageStorage,
        pydicom.uid.DigitalXRayImageStorageForPresentation,
        pydicom.uid.DigitalXRayImageStorageForProcessing,
        pydicom.uid.DigitalMammographyXRayImageStorageForPresentation,
        pydicom.uid.DigitalMammographyXRayImageStorageForProcessing,
        pydicom.uid.DigitalIntraOralXRayImageStorageForPresentation,
        pydicom.uid.DigitalIntraOralXRayImageStorageForProcessing,
        pydicom.uid.BreastProjectionXRayImageStorageForPresentation,
        pydicom.uid.BreastProjectionXRayImageStorageForProcessing,
        pydicom.uid.BreastTomosynthesisImageStorage,
        pydicom.uid.CTImageStorage,
        pydicom.uid.EnhancedCTImageStorage,
        pydicom.uid.LegacyConvertedEnhancedCTImageStorage,
        pydicom.uid.MRImageStorage,
        pydicom.uid.EnhancedMRImageStorage,
        pydicom.uid.LegacyConvertedEnhancedMRImageStorage,
        pydicom.uid.PositronEmissionTomographyImageStorage,
        pydicom.uid.EnhancedPETImageStorage,
        pydicom.uid.LegacyConvertedEnhancedPETImageStorage,
        pydicom.uid.NuclearMedicineImageStorage,
        pydicom.uid.UltrasoundImageStorage,
        pydicom.uid.UltrasoundMultiFrameImageStorage,
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired), still common in archives
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
        pydicom.uid.XRayAngiographicImageStorage,
        pydicom.uid.XRayRadiofluoroscopicImageStorage,
        pydicom.uid.SecondaryCaptureImageStorage,
        pydicom.uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        pydicom.uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    )
}

_BITS_ALLOCATED = {8, 16, 32}
_MONOCHROME = {"MONOCHROME1", "MONOCHROME2"}
_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR"}
# Functional groups whose attributes feed the per-frame pixel pipeline and geometry (PS3.3 C.7.6.16).
_FRAME_GROUPS = (
    "PixelValueTransformationSequence",
    "FrameVOILUTSequence",
    "PlanePositionSequence",
    "PlaneOrientationSequence",
    "PixelMeasuresSequence",
)
_FRAME_KEYWORDS = (
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
)


@dataclass
class DecodedImage:
    """One decoded DICOM file (all its frames). Carries UIDs for grouping only: never show or export them raw.

    Args:
        pixels: (F, H, W) float32 modality values, higher = brighter (MONOCHROME1 negated; luma for colour).
        display: (F, H, W) float32 in [0, 1] after VOI and MONOCHROME1 inversion.
        voi_applied: True when a VOI LUT / window from the header made ``display`` (else min–max).
        transforms: ordered pipeline steps applied.
        modality: DICOM Modality.
        sop_class_uid: SOP Class UID.
        transfer_syntax_uid: Transfer Syntax UID.
        photometric: PhotometricInterpretation as stored.
        study_uid: StudyInstanceUID (grouping only).
        series_uid: SeriesInstanceUID (grouping only).
        positions: (F, 3) ImagePositionPatient per frame, or None when any frame lacks one.
        orientation: (6,) ImageOrientationPatient (first frame), or None.
        pixel_spacing: (row, column) spacing in mm, or None.
        slice_thickness: SliceThickness in mm, or None.
        view_position: ViewPosition (e.g. ``PA``, ``AP``, ``LL``) or "".
        image_type: ImageType values (e.g. ``ORIGINAL``, ``PRIMARY``, ``LOCALIZER``).
        series_number: SeriesNumber or None.
        meta: de-identified display fields (see :func:`clinmm.io.deid.deidentified_meta`).
    """

    pixels: np.ndarray
    display: np.ndarray
    voi_applied: bool = False
    transforms: list[str] = field(default_factory=list)
    modality: str = ""
    sop_class_uid: str = ""
    transfer_syntax_uid: str = ""
    photometric: str = ""
    study_uid: str = ""
    series_uid: str = ""
    positions: np.ndarray | None = None
    orientation: np.ndarray | None = None
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    view_position: str = ""
    image_type: tuple[str, ...] = ()
    series_number: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@contextmanager
def pydicom_quiet() -> Iterator[None]:
    """Silence pydicom's value-validation warnings, whose text quotes element values (possible PHI), and Python
    warnings, for the duration of a read/decode. Restores the previous settings."""
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode = saved


def _fail(status: Status, detail: str, path: str, message: str = "") -> IngestError:
    return IngestError(status.value, detail, path=path, message=message or status.value)


def _float_list(value: Any, n: int) -> np.ndarray | None:
    """A numeric multi-value of length ``n`` as float64, or None when absent/malformed/non-finite."""
    try:
        if value is None:
            return None
        seq = list(value) if not isinstance(value, (str, bytes, int, float)) else [value]
        arr = np.asarray([float(v) for v in seq], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr


def _first_float(value: Any) -> float | None:
    try:
        if value is None:
            return None
        if not isinstance(value, (str, bytes, int, float)):
            value = list(value)[0]
        out = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return out if math.isfinite(out) else None


def _int_attr(ds: Dataset, keyword: str, path: str, *, default: int | None = None) -> int:
    try:
        value = ds.get(keyword, None)
        if value is None or value == "":
            if default is None:
                raise _fail(Status.BAD_HEADER, f"missing:{keyword}", path, "required attribute missing")
            return default
        return int(value)
    except IngestError:
        raise
    except Exception as err:  # malformed value (bad VR, wrong type)
        raise _fail(Status.BAD_HEADER, f"invalid:{keyword}", path, f"malformed attribute ({type(err).__name__})")


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID", None)
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = meta.get("MediaStorageSOPClassUID", None) if meta is not None else None
    return str(uid or "").strip()


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID", None) if meta is not None else None
    return str(uid or "").strip()


def read_header(
    path: str | os.PathLike[str],
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stop_before_pixels: bool = False,
    on_header: Callable[[Dataset], None] | None = None,
) -> Dataset:
    """Read a file strictly and check everything that can be checked before decoding.

    Args:
        path: the DICOM file.
        max_file_bytes: larger files are ``too_large`` (checked with ``stat`` before reading).
        max_pixels: Rows × Columns × Frames × SamplesPerPixel above this is ``too_large`` (before decoding).
        stop_before_pixels: read only the header (for grouping); skips the pixel-data checks.
        on_header: called with the dataset as soon as it is parsed (before any check), e.g. to fill a report row.

    Returns:
        The pydicom dataset.

    Raises:
        IngestError: ``not_dicom``, ``truncated``, ``bad_header``, ``too_large``, ``unsupported_sop_class``,
            ``no_pixel_data`` or ``no_decoder`` (detail = transfer syntax UID).
    """
    with pydicom_quiet():
        return _read_header(path, max_file_bytes=max_file_bytes, max_pixels=max_pixels,
                            stop_before_pixels=stop_before_pixels, on_header=on_header)


def _read_header(
    path: str | os.PathLike[str],
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stop_before_pixels: bool = False,
    on_header: Callable[[Dataset], None] | None = None,
) -> Dataset:
    """Body of :func:`read_header` (runs inside :func:`pydicom_quiet`)."""
    spath = os.fspath(path)
    try:
        size = os.stat(spath).st_size
    except OSError as err:
        raise _fail(Status.NOT_DICOM, "unreadable", spath, f"cannot stat file ({type(err).__name__})")
    if size > max_file_bytes:
        raise _fail(Status.TOO_LARGE, f"file_bytes:{size}>{max_file_bytes}", spath, "file too large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(spath, force=False, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise _fail(Status.NOT_DICOM, "no_dicm_preamble", spath, "not a DICOM Part 10 file")
    except EOFError:
        raise _fail(Status.TRUNCATED, "eof_in_header", spath, "file ends inside the header")
    except MemoryError:
        raise _fail(Status.TOO_LARGE, "memory", spath, "header needs too much memory")
    except Exception as err:  # pydicom raises many types on corrupt headers
        text = str(err).lower()
        status = Status.TRUNCATED if ("end of file" in text or "unexpected end" in text) else Status.BAD_HEADER
        raise _fail(status, type(err).__name__, spath, "cannot parse DICOM header")
    if on_header is not None:
        on_header(ds)

    sop = _sop_class(ds)
    if sop not in ALLOWED_SOP_CLASSES:
        raise _fail(Status.UNSUPPORTED_SOP_CLASS, sop or "missing", spath, "SOP class not in the image allow-list")
    if stop_before_pixels:
        return ds
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _fail(Status.NO_PIXEL_DATA, "", spath, "no Pixel Data element")
    if "PixelData" not in ds:
        raise _fail(Status.BAD_HEADER, "float_pixel_data", spath, "float pixel data in an integer image SOP class")

    rows = _int_attr(ds, "Rows", spath)
    cols = _int_attr(ds, "Columns", spath)
    bits = _int_attr(ds, "BitsAllocated", spath)
    stored = _int_attr(ds, "BitsStored", spath, default=bits)
    spp = _int_attr(ds, "SamplesPerPixel", spath, default=1)
    _int_attr(ds, "PixelRepresentation", spath, default=0)
    frames = _int_attr(ds, "NumberOfFrames", spath, default=1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if rows < 1 or cols < 1 or frames < 1:
        raise _fail(Status.BAD_HEADER, "non_positive_dimension", spath, "Rows/Columns/NumberOfFrames < 1")
    if bits not in _BITS_ALLOCATED or not 1 <= stored <= bits:
        raise _fail(Status.BAD_HEADER, f"bits:{bits}/{stored}", spath, "unsupported BitsAllocated/BitsStored")
    if spp not in (1, 3) or (spp == 3) != (photometric in _COLOUR - {"PALETTE COLOR"}):
        raise _fail(Status.BAD_HEADER, f"samples:{spp}/{photometric or 'missing'}", spath,
                    "SamplesPerPixel inconsistent with PhotometricInterpretation")
    if photometric not in _MONOCHROME | _COLOUR:
        raise _fail(Status.BAD_HEADER, f"photometric:{photometric or 'missing'}", spath,
                    "unsupported PhotometricInterpretation")
    n_pixels = rows * cols * frames * spp
    if n_pixels > max_pixels:
        raise _fail(Status.TOO_LARGE, f"pixels:{n_pixels}>{max_pixels}", spath, "image too large to decode")

    ts = _transfer_syntax(ds)
    if not ts:
        raise _fail(Status.BAD_HEADER, "missing:TransferSyntaxUID", spath, "no transfer syntax in file meta")
    uid = UID(ts)
    if uid.is_compressed or not uid.is_transfer_syntax:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise _fail(Status.NO_DECODER, ts, spath, "no decoder for this transfer syntax")
        if not decoder.is_available:
            raise _fail(Status.NO_DECODER, ts, spath, "no installed plugin decodes this transfer syntax")
    else:
        # YBR_FULL_422 stores 2 samples per pixel on average (PS3.5 8.2.1), YBR_PARTIAL_420 1.5.
        samples = {"YBR_FULL_422": 2.0, "YBR_PARTIAL_420": 1.5}.get(photometric, float(spp))
        expected = math.ceil(rows * cols * frames * samples * bits / 8)
        try:
            actual = len(ds.PixelData)
        except Exception as err:
            raise _fail(Status.TRUNCATED, type(err).__name__, spath, "cannot read Pixel Data")
        if actual < expected:
            raise _fail(Status.TRUNCATED, f"pixel_bytes:{actual}<{expected}", spath,
                        "Pixel Data shorter than the header says")
    return ds


def frame_dataset(ds: Dataset, index: int) -> Dataset:
    """A flat dataset with the attributes that apply to frame ``index`` (PS3.3 C.7.6.16 functional groups).

    Top-level attributes come first, then the Shared Functional Groups, then the Per-Frame Functional Groups (most
    specific wins), so ``pydicom.pixels`` functions can be applied frame by frame to enhanced multi-frame files.

    Args:
        ds: the whole dataset.
        index: 0-based frame number.

    Returns:
        A new dataset (no pixel data) holding PhotometricInterpretation, bit depth, rescale, window / VOI LUT,
        and plane position / orientation / pixel measures for that frame.
    """
    out = Dataset()
    for keyword in ("PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation", "Modality",
                    *_FRAME_KEYWORDS):
        if keyword in ds:
            out[keyword] = ds[keyword]
    if getattr(ds, "file_meta", None) is not None:
        out.file_meta = ds.file_meta
    out.set_original_encoding(*ds.original_encoding)
    groups: list[Dataset] = []
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", None)
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for name in _FRAME_GROUPS:
            seq = group.get(name, None)
            if not seq:
                continue
            for elem in seq[0]:
                if elem.keyword in _FRAME_KEYWORDS:
                    out[elem.keyword] = elem
    return out


def luma_bt601(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an (..., 3) RGB array: ``0.299 R + 0.587 G + 0.114 B`` as float64."""
    rgb = rgb.astype(np.float64, copy=False)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _lut_entries(item: Dataset, *, little_endian: bool) -> np.ndarray:
    """The entries of a LUT item (LUT Descriptor + LUT Data, US or OW) as float64, ``n`` long (PS3.3 C.11.2.1.1)."""
    n = int(item.LUTDescriptor[0]) or 2**16
    elem = item["LUTData"]
    if isinstance(elem.value, (bytes, bytearray)):
        data = np.frombuffer(bytes(elem.value), dtype="<u2" if little_endian else ">u2")
    else:
        data = np.asarray(elem.value if isinstance(elem.value, (list, tuple)) or hasattr(elem.value, "__iter__")
                          else [elem.value], dtype=np.float64)
    if data.size < n:
        raise ValueError("LUT Data shorter than its descriptor")
    return data[:n].astype(np.float64)


def _voi_display(values: np.ndarray, fds: Dataset) -> tuple[np.ndarray | None, str]:
    """VOI of one frame's modality values → display in [0, 1], or (None, reason) when none applies.

    VOI LUT Sequence wins over window attributes (PS3.3 C.11.2); the first window is used when several are given.
    """
    seq = fds.get("VOILUTSequence", None)
    if seq and seq[0].get("LUTDescriptor", None) is not None and seq[0].get("LUTData", None) is not None:
        try:
            lut = _lut_entries(seq[0], little_endian=fds.original_encoding[1] is not False)
            first_map = int(seq[0].LUTDescriptor[1])
            # pydicom 3.0.2's apply_voi indexes through the LUT's own dtype (uint8 for 8-bit entries), which wraps
            # for LUTs with more than 256 entries; the lookup itself is one line, so it is done here.
            index = np.clip(np.rint(values) - first_map, 0, lut.size - 1).astype(np.int64)
            out = lut[index]
            # Output range of a VOI LUT is the range of its entries (what the LUT can produce).
            lo, hi = float(lut.min()), float(lut.max())
            scale = hi - lo if hi > lo else 1.0
            return np.clip((out - lo) / scale, 0.0, 1.0), "voi_lut_sequence"
        except Exception as err:  # malformed LUT: fall back to the window, then to min-max
            logger.debug("VOI LUT unusable (%s); trying window", type(err).__name__)
    center = _first_float(fds.get("WindowCenter", None))
    width = _first_float(fds.get("WindowWidth", None))
    if center is None or width is None:
        return None, "no_voi"
    function = str(fds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    shown = window_display(values, center, width, function)
    if shown is None:
        return None, "invalid_window"
    return shown, f"voi_window_{function.lower()}"


def window_display(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray | None:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3 windowing of modality values straight to [0, 1] (None: invalid window).

    Same result as ``pydicom.pixels.apply_windowing`` scaled to [0, 1] (tests check it against pydicom for all three
    functions), written as one clipped affine map: pydicom's boolean-mask version costs ~9 ms per 512×512 frame,
    ten times the rest of the pipeline, which matters for ``clinmm inspect`` throughput.
    """
    x = np.asarray(values, dtype=np.float64)
    if function in ("LINEAR", "LINEAR_EXACT"):
        exact = function == "LINEAR_EXACT"
        if (exact and width <= 0) or (not exact and width < 1):
            return None
        if not exact and width == 1:
            return (x > center - 0.5).astype(np.float64)
        c, w = (center, width) if exact else (center - 0.5, width - 1.0)
        y = x * (1.0 / w)  # one temporary, then in place: y = (x - c) / w + 0.5, clipped to [0, 1]
        y += 0.5 - c / w
        np.clip(y, 0.0, 1.0, out=y)
        return y
    if function == "SIGMOID":
        if width <= 0:
            return None
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    return None


def decode_dataset(ds: Dataset, *, path: str = "") -> DecodedImage:
    """Decode a dataset that passed :func:`read_header` and run the pixel pipeline.

    Args:
        ds: dataset with pixel data.
        path: for error messages only.

    Returns:
        The decoded image with geometry.

    Raises:
        IngestError: ``decode_error`` (detail = exception class) when a decoder or the pipeline fails.
    """
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except MemoryError:
        raise _fail(Status.TOO_LARGE, "memory", path, "decoded image does not fit in memory")
    except Exception as err:
        raise _fail(Status.DECODE_ERROR, f"{type(err).__name__}:{_transfer_syntax(ds)}", path,
                    "pixel data could not be decoded")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = photometric in _COLOUR
    try:
        if colour and photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        if frames == 1:
            arr = arr[np.newaxis]
        if arr.ndim != (4 if colour else 3):
            raise ValueError(f"decoded array has {arr.ndim} dimensions")
        transforms: list[str] = []
        voi_applied = False
        if colour:
            if photometric == "PALETTE COLOR":
                transforms.append("palette_color_lut")
                depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
            else:
                depth = int(ds.BitsStored)
                if photometric.startswith("YBR"):
                    transforms.append("ybr_to_rgb")
            transforms.append("rgb_to_luma_bt601")
            pixels = luma_bt601(arr)  # (F, H, W)
            display = np.clip(pixels / float(2**depth - 1), 0.0, 1.0)
            voi_applied = True
        else:
            pixels = np.empty(arr.shape, dtype=np.float32)  # (F, H, W)
            display = np.empty(arr.shape, dtype=np.float32)
            kinds: set[str] = set()
            for i in range(arr.shape[0]):
                fds = frame_dataset(ds, i)
                modality = np.asarray(apply_modality_lut(arr[i], fds), dtype=np.float64)
                pixels[i] = modality
                shown, kind = _voi_display(modality, fds)
                kinds.add(kind)
                if shown is None:
                    display[i] = np.nan
                else:
                    display[i] = shown
            if "ModalityLUTSequence" in ds:
                transforms.append("modality_lut_sequence")
            elif "RescaleSlope" in frame_dataset(ds, 0):
                transforms.append("rescale")
            voi_kinds = sorted(k for k in kinds if k.startswith("voi_"))
            transforms.extend(voi_kinds)
            voi_applied = not (kinds - set(voi_kinds))
            if photometric == "MONOCHROME1":
                pixels = -pixels
                display = 1.0 - display
                transforms.append("monochrome1_invert")
            if not voi_applied:
                # Frames without a usable VOI: min-max of the oriented modality values over the whole file.
                missing = np.isnan(display).any(axis=(1, 2))
                lo, hi = float(pixels.min()), float(pixels.max())
                display[missing] = (pixels[missing] - lo) / (hi - lo) if hi > lo else 0.0
                transforms.append("minmax_display")
        if not np.all(np.isfinite(pixels)):
            raise ValueError("non-finite modality values")
    except IngestError:
        raise
    except MemoryError:
        raise _fail(Status.TOO_LARGE, "memory", path, "decoded image does not fit in memory")
    except Exception as err:
        raise _fail(Status.DECODE_ERROR, f"pipeline:{type(err).__name__}", path, "pixel pipeline failed")

    first = frame_dataset(ds, 0)
    positions = [_float_list(frame_dataset(ds, i).get("ImagePositionPatient", None), 3) for i in range(frames)] \
        if "PerFrameFunctionalGroupsSequence" in ds else [_float_list(first.get("ImagePositionPatient", None), 3)]
    spacing = _float_list(first.get("PixelSpacing", None), 2)
    if spacing is None:
        spacing = _float_list(ds.get("ImagerPixelSpacing", None), 2)
    try:
        image_type = tuple(str(v).upper() for v in (ds.get("ImageType", None) or ()))
    except TypeError:
        image_type = ()
    try:
        series_number = int(ds.get("SeriesNumber", None)) if ds.get("SeriesNumber", None) not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    from clinmm.io.deid import deidentified_meta  # local: deid imports this module's constants

    return DecodedImage(
        pixels=pixels.astype(np.float32, copy=False),
        display=display.astype(np.float32, copy=False),
        voi_applied=voi_applied,
        transforms=transforms,
        modality=str(ds.get("Modality", "") or ""),
        sop_class_uid=_sop_class(ds),
        transfer_syntax_uid=_transfer_syntax(ds),
        photometric=photometric,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        positions=None if any(p is None for p in positions) else np.stack(positions),  # type: ignore[arg-type]
        orientation=_float_list(first.get("ImageOrientationPatient", None), 6),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        slice_thickness=_first_float(first.get("SliceThickness", None)),
        view_position=str(ds.get("ViewPosition", "") or "").strip().upper(),
        image_type=image_type,
        series_number=series_number,
        meta=deidentified_meta(ds),
    )


def read_dicom(
    path: str | os.PathLike[str] | Path,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_header: Callable[[Dataset], None] | None = None,
) -> DecodedImage:
    """Read, check and decode one DICOM file (strict ``dcmread``, allow-listed SOP class, bounded size).

    Args:
        path: the DICOM file.
        max_file_bytes: bound on the file size.
        max_pixels: bound on Rows × Columns × Frames × SamplesPerPixel.
        on_header: see :func:`read_header`.

    Returns:
        The decoded image.

    Raises:
        IngestError: with one :class:`~clinmm.io.status.Status` value (never ``ok``).
    """
    spath = os.fspath(path)
    with pydicom_quiet():
        ds = read_header(spath, max_file_bytes=max_file_bytes, max_pixels=max_pixels, on_header=on_header)
        try:
            return decode_dataset(ds, path=spath)
        except IngestError:
            raise
        except Exception as err:  # last guard: a header value that only fails when used
            raise _fail(Status.BAD_HEADER, type(err).__name__, spath, "attribute unusable while decoding")
