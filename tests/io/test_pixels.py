"""Pixel correctness: Modality LUT → VOI → MONOCHROME1, per-frame functional groups, colour rule, pinned values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_factory import make_dataset, write
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space
from pydicom.sequence import Sequence

from clinmm.errors import IngestError
from clinmm.io.dicom import frame_dataset, luma_bt601, read_dicom
from clinmm.io.load import load_image
from clinmm.io.status import Status


def _window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window to [0, 1], written out independently of pydicom."""
    x = x.astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5)
    y[x <= c - 0.5 - (w - 1) / 2] = 0.0
    y[x > c - 0.5 + (w - 1) / 2] = 1.0
    return y


def test_ct_small_pinned(test_files: Path) -> None:
    vol = load_image(test_files / "CT_small.dcm")
    assert vol.shape == (1, 128, 128)
    assert vol.modality == "CT"
    np.testing.assert_array_equal(vol.pixels[0, 0, :4], [-849, -844, -858, -881])
    assert vol.pixels[0, 64, 64] == 904
    assert (vol.pixels.min(), vol.pixels.max()) == (-896, 1167)
    assert vol.pixels.mean() == pytest.approx(-119.07385, abs=1e-3)
    assert vol.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    # no window in the header: display is the min-max of the modality values
    assert "minmax_display" in vol.provenance.transforms
    assert (vol.display.min(), vol.display.max()) == (0.0, 1.0)


def test_rescale_matches_pydicom_apply_modality_lut(test_files: Path) -> None:
    ds = pydicom.dcmread(test_files / "CT_small.dcm")
    expected = apply_modality_lut(ds.pixel_array, ds)
    vol = load_image(test_files / "CT_small.dcm")
    np.testing.assert_array_equal(vol.pixels[0], expected.astype(np.float32))
    assert vol.provenance.transforms[0] == "rescale"


def test_mr_small_window_pinned(test_files: Path) -> None:
    vol = load_image(test_files / "MR_small.dcm")
    ds = pydicom.dcmread(test_files / "MR_small.dcm")
    np.testing.assert_allclose(vol.display[0], _window(ds.pixel_array, 600.0, 1600.0), atol=1e-6)
    np.testing.assert_allclose(vol.display[0, 32, 30:34], [0.23014385, 0.2539087, 0.2388993, 0.25140712], atol=1e-6)
    assert vol.provenance.transforms == ["voi_window_linear"]


def test_monochrome1_and_monochrome2_twin_show_the_same_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 4096, size=(32, 24)).astype(np.uint16)
    top, c, w = 4095, 1800.0, 1200.0
    m1 = make_dataset(stored, photometric="MONOCHROME1", bits_stored=12,
                      sop_class=pydicom.uid.DigitalXRayImageStorageForPresentation, modality="DX",
                      WindowCenter=c, WindowWidth=w)
    # The twin stores top - v; its window centre mirrors too (c2 = top - c + 1 keeps LINEAR's half-pixel offset).
    m2 = make_dataset((top - stored).astype(np.uint16), photometric="MONOCHROME2", bits_stored=12,
                      sop_class=pydicom.uid.DigitalXRayImageStorageForPresentation, modality="DX",
                      WindowCenter=top - c + 1, WindowWidth=w)
    v1 = load_image(write(m1, tmp_path / "m1.dcm"))
    v2 = load_image(write(m2, tmp_path / "m2.dcm"))
    np.testing.assert_allclose(v1.display, v2.display, atol=1e-6)
    assert 0.05 < float(v1.display.mean()) < 0.95
    # pixels: higher = brighter for both (they differ only by the constant offset of the twin's stored values)
    np.testing.assert_allclose(v2.pixels - v1.pixels, top)
    assert v1.provenance.transforms[-1] == "monochrome1_invert"
    # bright on display <=> high pixel value, in both
    assert np.corrcoef(v1.pixels.ravel(), v1.display.ravel())[0, 1] > 0.9


def test_monochrome1_without_window_is_inverted(tmp_path: Path) -> None:
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8)
    vol = load_image(write(make_dataset(stored, photometric="MONOCHROME1", modality="CR",
                                        sop_class=pydicom.uid.ComputedRadiographyImageStorage), tmp_path / "a.dcm"))
    assert vol.display[0, 0, 0] == 1.0 and vol.display[0, -1, -1] == 0.0  # stored 0 is white in MONOCHROME1
    assert vol.pixels[0, 0, 0] > vol.pixels[0, -1, -1]


def _voi_lut_item(n: int = 4096) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [n, 0, 8])  # LUT Descriptor
    # a non-linear LUT (square root curve), 8-bit entries
    item.add_new(0x00283006, "US", [int(round(255 * (i / (n - 1)) ** 0.5)) for i in range(n)])  # LUT Data
    return item


def test_voi_lut_sequence_wins_over_window_and_window_used_without_it(tmp_path: Path) -> None:
    stored = np.linspace(0, 4095, 40 * 40).astype(np.uint16).reshape(40, 40)
    ds = make_dataset(stored, bits_stored=12, modality="CR", sop_class=pydicom.uid.ComputedRadiographyImageStorage,
                      WindowCenter=[1000.0, 3000.0], WindowWidth=[500.0, 100.0])
    ds.VOILUTSequence = Sequence([_voi_lut_item()])
    vol = load_image(write(ds, tmp_path / "lut.dcm"))
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    np.testing.assert_allclose(vol.display[0], lut[stored] / 255.0, atol=1e-6)
    assert vol.provenance.transforms == ["voi_lut_sequence"]
    del ds.VOILUTSequence
    vol = load_image(write(ds, tmp_path / "win.dcm"))
    np.testing.assert_allclose(vol.display[0], _window(stored, 1000.0, 500.0), atol=1e-6)  # the FIRST window
    assert vol.provenance.transforms == ["voi_window_linear"]


def test_voi_lut_file_from_pydicom_data(data_files: Path) -> None:
    path = data_files / "vlut_04.dcm"
    ds = pydicom.dcmread(path)
    vol = load_image(path)
    item = ds.VOILUTSequence[0]
    from pydicom.pixels import apply_voi

    expected = apply_voi(apply_modality_lut(ds.pixel_array, ds).astype(np.int64), ds).astype(np.float64)
    first, n = int(item.LUTDescriptor[1]), int(item.LUTDescriptor[0]) or 65536
    full = apply_voi(np.arange(first, first + n), ds).astype(np.float64)
    np.testing.assert_allclose(vol.display[0], (expected - full.min()) / (full.max() - full.min()), atol=1e-6)


def _enhanced_ct(tmp_path: Path) -> tuple[Path, np.ndarray]:
    frames, rows, cols = 3, 8, 8
    stored = np.full((frames, rows, cols), 100, dtype=np.uint16)
    stored[:, 0, 0] = 0
    ds = make_dataset(stored[0], sop_class=pydicom.uid.EnhancedCTImageStorage, orientation=None)
    ds.NumberOfFrames = frames
    ds.PixelData = stored.tobytes()
    del ds.PixelSpacing
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [0.7, 0.7]
    measures.SliceThickness = 5.0
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 150.0, 400.0
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    zs, slopes, intercepts = [5.0, 0.0, 10.0], [1.0, 2.0, 3.0], [0.0, -10.0, -20.0]
    for z, s, b in zip(zs, slopes, intercepts):
        item, pos, pvt = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, z]
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = s, b, "HU"
        item.PlanePositionSequence = Sequence([pos])
        item.PixelValueTransformationSequence = Sequence([pvt])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    return write(ds, tmp_path / "enhanced.dcm"), np.asarray([100 * s + b for s, b in zip(slopes, intercepts)])


def test_enhanced_multiframe_per_frame_rescale_window_and_geometry(tmp_path: Path) -> None:
    path, per_frame_value = _enhanced_ct(tmp_path)  # frame values in file order: 100, 190, 280
    ds = pydicom.dcmread(path)
    assert float(frame_dataset(ds, 1).RescaleSlope) == 2.0
    vol = load_image(path)
    assert vol.shape == (3, 8, 8)
    # frames are ordered along the slice normal (z = 0, 5, 10 → file frames 1, 0, 2)
    np.testing.assert_array_equal(vol.pixels[:, 4, 4], per_frame_value[[1, 0, 2]])
    np.testing.assert_array_equal(vol.pixels[:, 0, 0], [-10.0, 0.0, -20.0])
    assert vol.spacing == pytest.approx((5.0, 0.7, 0.7))
    np.testing.assert_allclose(vol.display[:, 4, 4], _window(per_frame_value[[1, 0, 2]], 150.0, 400.0), atol=1e-6)
    assert vol.provenance.transforms[:2] == ["rescale", "voi_window_linear"]


def test_rgb_rule_is_bt601_luma(test_files: Path) -> None:
    path = test_files / "SC_rgb_rle.dcm"
    rgb = pydicom.dcmread(path).pixel_array
    vol = load_image(path)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(vol.pixels[0], expected, rtol=1e-6)
    np.testing.assert_allclose(vol.display[0], expected / 255.0, rtol=1e-6)
    assert vol.provenance.transforms == ["rgb_to_luma_bt601"]


def test_ybr_full_converts_through_rgb_then_luma(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds = make_dataset(ybr, photometric="YBR_FULL", sop_class=pydicom.uid.SecondaryCaptureImageStorage, modality="OT")
    vol = load_image(write(ds, tmp_path / "ybr.dcm"))
    assert vol.provenance.transforms == ["ybr_to_rgb", "rgb_to_luma_bt601"]
    # YBR_FULL <-> RGB is lossy by rounding only: within 2 grey levels of the RGB original's luma
    np.testing.assert_allclose(vol.pixels[0], luma_bt601(rgb), atol=2.0)


def test_ybr_full_422_file_and_palette_file(test_files: Path) -> None:
    path = test_files / "SC_ybr_full_422_uncompressed.dcm"
    vol = load_image(path)
    np.testing.assert_allclose(vol.pixels[0], luma_bt601(pydicom.dcmread(path).pixel_array), rtol=1e-6)
    path = test_files / "examples_palette.dcm"
    ds = pydicom.dcmread(path)
    vol = load_image(path)
    np.testing.assert_allclose(vol.pixels[0], luma_bt601(apply_color_lut(ds.pixel_array, ds)), rtol=1e-6)
    assert vol.provenance.transforms == ["palette_color_lut", "rgb_to_luma_bt601"]
    assert 0.0 <= vol.display.min() and vol.display.max() <= 1.0


@pytest.mark.parametrize(
    ("mutate", "status", "detail"),
    [
        (lambda ds: setattr(ds, "SOPClassUID", pydicom.uid.RTDoseStorage), Status.UNSUPPORTED_SOP_CLASS,
         pydicom.uid.RTDoseStorage),
        (lambda ds: delattr(ds, "PixelData"), Status.NO_PIXEL_DATA, ""),
        (lambda ds: setattr(ds, "Rows", 60000) or setattr(ds, "Columns", 60000), Status.TOO_LARGE, None),
        (lambda ds: setattr(ds, "BitsAllocated", 12), Status.BAD_HEADER, "bits:12/16"),
        (lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]), Status.TRUNCATED, None),
        (lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2.4.92")
         or setattr(ds, "PixelData", encapsulate([b"\x00" * 64])), Status.NO_DECODER, "1.2.840.10008.1.2.4.92"),
    ],
)
def test_statuses_before_decoding(tmp_path: Path, mutate, status: Status, detail: str | None) -> None:
    ds = make_dataset(np.zeros((16, 16), dtype=np.uint16))
    mutate(ds)
    path = write(ds, tmp_path / "f.dcm")
    with pytest.raises(IngestError) as info:
        read_dicom(path, max_pixels=1024 * 1024)
    assert info.value.status == status.value
    if detail is not None:
        assert info.value.detail == detail


def test_not_dicom_and_too_large_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(IngestError) as info:
        read_dicom(tmp_path / "notes.txt")
    assert info.value.status == "not_dicom"
    path = write(make_dataset(np.zeros((16, 16), dtype=np.uint16)), tmp_path / "f.dcm")
    with pytest.raises(IngestError) as info:
        read_dicom(path, max_file_bytes=100)
    assert info.value.status == "too_large"


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("center", "width"), [(40.0, 400.0), (-600.0, 1500.0), (100.5, 1.0), (0.0, 2.0)])
def test_window_matches_pydicom_apply_windowing(function: str, center: float, width: float) -> None:
    from pydicom.pixels import apply_windowing

    from clinmm.io.dicom import window_display

    values = np.linspace(-1100.0, 1100.0, 4401)
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    if function != "LINEAR" and width <= 0:
        pytest.skip("invalid for this function")
    expected = apply_windowing(values.copy(), ds) / 65535.0
    np.testing.assert_allclose(window_display(values, center, width, function), expected, atol=1e-9)
