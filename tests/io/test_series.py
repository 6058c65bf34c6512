"""Series: geometric order whatever the file order, gaps/duplicates/orientations reported, series choice rule."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_factory import ct_series, make_dataset, write
from pydicom.uid import generate_uid

from clinmm.errors import IngestError
from clinmm.io.keys import study_key
from clinmm.io.load import load_image
from clinmm.io.series import SeriesHeader, choose_series, sort_slices


def test_shuffled_series_gives_the_same_volume_and_spacing(tmp_path: Path) -> None:
    ordered = ct_series(tmp_path / "a", n=7, gap=2.5)
    ref = load_image(tmp_path / "a")
    assert ref.shape == (7, 16, 16)
    assert ref.spacing == pytest.approx((2.5, 0.5, 0.5))
    # slice k holds base + 100 k: the volume must go up by 100 per slice along z (not InstanceNumber, which is reversed)
    np.testing.assert_allclose(np.diff(ref.pixels.mean(axis=(1, 2))), 100.0)
    # same files under shuffled, extension-less names in nested folders
    names = list(range(7))
    random.Random(5).shuffle(names)
    for k, src in enumerate(ordered):
        dest = tmp_path / "b" / f"d{names[k] % 2}" / f"IM{names[k]:04X}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    vol = load_image(tmp_path / "b")
    np.testing.assert_array_equal(vol.pixels, ref.pixels)
    np.testing.assert_array_equal(vol.display, ref.display)
    assert vol.spacing == ref.spacing
    assert vol.provenance.series_rule == "only series"
    assert len(vol.provenance.files) == 7


def test_removed_middle_slice_is_reported(tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "s", n=6, gap=2.0)
    paths[3].unlink()
    with pytest.raises(IngestError) as info:
        load_image(tmp_path / "s")
    assert info.value.status == "inconsistent_series"
    assert info.value.detail == "missing_slices:1"


def test_duplicate_non_uniform_and_mixed_orientation(tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "dup", n=4, gap=2.0)
    shutil.copy(paths[1], tmp_path / "dup" / "copy.dcm")
    with pytest.raises(IngestError) as info:
        load_image(tmp_path / "dup")
    assert info.value.detail == "duplicate_slices:1"

    geo = sort_slices([np.array([0, 0, z]) for z in (0.0, 2.0, 4.0, 5.4, 7.4)], [np.array([1, 0, 0, 0, 1, 0])] * 5)
    assert geo.issues == ["non_uniform_spacing"]

    tilt = (1, 0, 0, 0, 0.9, 0.43589)
    paths = ct_series(tmp_path / "mix", n=4, gap=2.0)
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = list(tilt)
    ds.save_as(paths[2])
    with pytest.raises(IngestError) as info:
        load_image(tmp_path / "mix")
    assert info.value.status == "inconsistent_series"
    assert "mixed_orientation" in info.value.detail


def test_sort_is_along_the_normal_for_oblique_and_sagittal_slices() -> None:
    # sagittal slices: normal = row x column = (0,1,0) x (0,0,-1) = -x, so ascending along the normal is x
    # descending; positions given out of order and with an in-plane drift that must not matter
    orient = np.array([0, 1, 0, 0, 0, -1], dtype=float)
    xs = [3.0, -1.0, 1.0, 5.0]
    geo = sort_slices([np.array([x, 10.0 * i, 0.0]) for i, x in enumerate(xs)], [orient] * 4)
    assert [xs[i] for i in geo.order] == [5.0, 3.0, 1.0, -1.0]
    assert geo.spacing == pytest.approx(2.0)
    assert geo.issues == []


def _cr(folder: Path, study: str, view: str, *, localizer: bool = False, number: int = 1) -> Path:
    ds = make_dataset(np.full((8, 8), 10 + number, dtype=np.uint16), modality="DX", study_uid=study,
                      sop_class=pydicom.uid.DigitalXRayImageStorageForPresentation, ViewPosition=view,
                      SeriesNumber=number, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER" if localizer else "AXIAL"])
    return write(ds, folder / f"img{number}")


def test_series_choice_pa_over_lateral_and_localizer(tmp_path: Path) -> None:
    study = generate_uid()
    _cr(tmp_path / "st", study, "LL", number=1)
    _cr(tmp_path / "st", study, "AP", localizer=True, number=2)
    _cr(tmp_path / "st", study, "PA", number=3)
    vol = load_image(tmp_path / "st", salt=b"s" * 32)
    assert vol.pixels[0, 0, 0] == 13  # the PA image
    assert vol.provenance.series_rule == "frontal view: ViewPosition=PA (skipped 1 localizer; skipped 1 lateral)"
    ds = pydicom.dcmread(tmp_path / "st" / "img3")
    assert vol.provenance.series_key == study_key(ds.SeriesInstanceUID, salt=b"s" * 32)
    # without the PA, the lateral is chosen: a localizer is never chosen while another series exists
    (tmp_path / "st" / "img3").unlink()
    vol = load_image(tmp_path / "st")
    assert vol.pixels[0, 0, 0] == 11
    assert vol.provenance.series_rule == "projection: lateral only (skipped 1 localizer)"
    # an AP (not a localizer) beats the lateral
    _cr(tmp_path / "st", study, "AP", number=4)
    assert load_image(tmp_path / "st").pixels[0, 0, 0] == 14


def test_series_choice_largest_axial_ct() -> None:
    axial = np.array([1, 0, 0, 0, 1, 0], dtype=float)
    coronal = np.array([1, 0, 0, 0, 0, -1], dtype=float)
    groups = {
        "1.1": [SeriesHeader("a", "s", "1.1", "CT", image_type=("ORIGINAL", "LOCALIZER"), orientation=coronal)] * 40,
        "1.2": [SeriesHeader("b", "s", "1.2", "CT", orientation=axial, series_number=2)] * 30,
        "1.3": [SeriesHeader("c", "s", "1.3", "CT", orientation=coronal, series_number=3)] * 60,
        "1.4": [SeriesHeader("d", "s", "1.4", "CT", orientation=axial, series_number=4)] * 10,
    }
    choice = choose_series(groups)
    assert choice.series_uid == "1.2"
    assert choice.rule == "cross-sectional: largest axial series (30 images) (skipped 1 localizer)"
    assert choice.skipped == 3


def test_folder_with_two_studies_is_inconsistent(tmp_path: Path) -> None:
    ct_series(tmp_path / "x" / "one", n=2)
    ct_series(tmp_path / "x" / "two", n=2)
    with pytest.raises(IngestError) as info:
        load_image(tmp_path / "x")
    assert info.value.detail == "multiple_studies:2"


def test_real_study_folders_from_pydicom(test_files: Path) -> None:
    """pydicom's dicomdirtests hold small real study folders (downsampled to 16x16)."""
    base = test_files / "dicomdirtests"
    vol = load_image(base / "98892001")  # CT study: an axial series and a localizer
    assert vol.shape == (5, 16, 16) and vol.modality == "CT"
    assert vol.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    assert vol.provenance.series_rule == "cross-sectional: largest axial series (5 images) (skipped 1 localizer)"
    vol = load_image(base / "77654033" / "CR1")  # a real MONOCHROME1 CR
    assert vol.provenance.transforms == ["rescale", "voi_window_linear", "monochrome1_invert"]
    with pytest.raises(IngestError) as info:
        load_image(base / "98892003" / "MR700")  # one series holding slices in several orientations
    assert info.value.status == "inconsistent_series" and "mixed_orientation" in info.value.detail
    with pytest.raises(IngestError) as info:
        load_image(base / "77654033")  # several studies in one folder
    assert info.value.detail == "multiple_studies:2"
