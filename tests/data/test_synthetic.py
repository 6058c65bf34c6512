"""Tests of the synthetic paired DICOM + note generator (``clinmm sample-data``) and the trivial baselines."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from clinmm.baselines import brightest_pixel_score, evaluate_baselines, keyword_score
from clinmm.data.synthetic import LABELS, MANIFEST_COLUMNS, SyntheticOptions, generate_sample_data
from clinmm.data.synthetic.notes import PHRASES, phrase_pool_for_split, render_note

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "sample_data" / "tiny"
TINY_ARGS = {"studies": 40, "seed": 7, "options": SyntheticOptions(image_size=96)}


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _files(root: Path) -> list[Path]:
    return sorted(f for f in root.rglob("*") if f.is_file())


def _digest(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in _files(root)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    generate_sample_data(out, studies=60, seed=11, options=SyntheticOptions(image_size=64))
    return out


def _dicom_files(root: Path) -> list[Path]:
    return sorted((root / "dicom").rglob("*.dcm"))


def test_layout_and_manifest_columns(dataset: Path) -> None:
    for name in ("manifest.csv", "notes.csv", "README.md", "ground_truth/evidence.json"):
        assert (dataset / name).is_file(), name
    rows = _rows(dataset)
    assert len(rows) == 60
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    for r in rows:
        assert r["split"] in {"train", "val", "test"}
        for name in LABELS:
            assert r[f"label_{name}"] in {"", "0", "1"}
        if r["image_path"]:
            p = dataset / r["image_path"]
            assert p.is_dir() if r["modality"] == "CT" else p.is_file(), r["image_path"]
        else:
            assert r["modality"] == "" and r["view"] == ""
    with open(dataset / "notes.csv", newline="", encoding="utf-8") as fh:
        notes = list(csv.DictReader(fh))
    assert list(notes[0]) == ["study_instance_uid", "accession_number", "note_text"]
    assert {n["note_text"] for n in notes} == {r["note_text"] for r in rows if r["note_text"]}


def test_label_logic_and_missing_modalities(dataset: Path) -> None:
    rows = _rows(dataset)
    for r in rows:
        c, f, p = r["label_consolidation"], r["label_fever"], r["label_pneumonia"]
        if c and f and p:
            assert int(p) == (int(c) and int(f)), r["study_id"]
    assert sum(not r["image_path"] for r in rows) == round(0.04 * 60)
    assert sum(not r["note_text"] for r in rows) == round(0.08 * 60)
    assert not any(not r["image_path"] and not r["note_text"] for r in rows)
    for name in LABELS:
        assert any(r[f"label_{name}"] == "1" for r in rows), name


def test_patient_level_split(dataset: Path) -> None:
    rows = _rows(dataset)
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert 0.6 <= counts["train"] / 60 <= 0.8 and counts["val"] >= 5 and counts["test"] >= 5
    per_patient = [sum(r["patient_id"] == p for r in rows) for p in by_patient]
    assert set(per_patient) <= {1, 2, 3} and max(per_patient) > 1
    assert {r["site"] for r in rows} == {"site_a", "site_b", "site_c"}
    assert {r["sex"] for r in rows} == {"F", "M"}


def test_dicom_strict_read_and_variety(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Strict: no force, and any invalid value (VR length, character set, UID syntax) raises while reading.
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    seen: dict[str, set] = {"ts": set(), "photometric": set(), "modality": set(), "rescale": set(), "shape": set()}
    manufacturers: dict[str, set[str]] = {}
    for f in _dicom_files(dataset):
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array
        for elem in ds.iterall():
            _ = elem.value  # convert every raw element, so validation runs on all of them
        assert arr.shape == (ds.Rows, ds.Columns)
        seen["ts"].add(ds.file_meta.TransferSyntaxUID)
        seen["photometric"].add(ds.PhotometricInterpretation)
        seen["modality"].add(ds.Modality)
        seen["rescale"].add((float(ds.RescaleSlope), float(ds.RescaleIntercept)))
        seen["shape"].add((ds.Rows, ds.Columns))
        assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid and pydicom.uid.UID(ds.StudyInstanceUID).is_valid
        assert "WindowCenter" in ds and "WindowWidth" in ds
        if ds.Modality == "CT":
            geometry = {"ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"}
            assert geometry <= set(ds.dir())
            assert ds.RescaleType == "HU"
        manufacturers.setdefault(ds.Manufacturer, set()).add(ds.InstitutionName)
    assert seen["modality"] == {"CR", "DX", "CT"}
    assert seen["photometric"] == {"MONOCHROME1", "MONOCHROME2"}
    assert {str(t) for t in seen["ts"]} >= {pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.RLELossless}
    assert any(s != (1.0, 0.0) for s in seen["rescale"] if s[1] != -1024.0)
    assert any(r != c for r, c in seen["shape"])
    assert len(manufacturers) == 3


def test_monochrome1_and_rescale_encode_brightness(dataset: Path) -> None:
    """Pixel pipeline (rescale, then MONOCHROME1 inversion) recovers an image where lungs are darker than the spine."""
    for f in _dicom_files(dataset):
        ds = pydicom.dcmread(f)
        if ds.Modality == "CT":
            continue
        m = pydicom.pixels.apply_rescale(ds.pixel_array.astype(np.float64), ds)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            m = m.max() - m
        h, w = m.shape
        lung = np.median(m[int(0.35 * h) : int(0.55 * h), int(0.22 * w) : int(0.34 * w)])
        spine = np.median(m[int(0.35 * h) : int(0.55 * h), int(0.48 * w) : int(0.52 * w)])
        assert spine > lung, f.name


def test_monai_loads_files_and_series(dataset: Path) -> None:
    """MONAI's PydicomReader loads one image of each kind (modality × photometric × transfer syntax) and CT series."""
    from monai.transforms import LoadImage

    loader = LoadImage(reader="PydicomReader", image_only=True)
    kinds: dict[tuple[str, str, str], Path] = {}
    for r in _rows(dataset):
        if r["image_path"]:
            p = dataset / r["image_path"]
            ds = pydicom.dcmread(sorted(p.glob("*.dcm"))[0] if p.is_dir() else p, stop_before_pixels=True)
            kinds.setdefault((ds.Modality, ds.PhotometricInterpretation, ds.file_meta.TransferSyntaxUID), p)
    assert len(kinds) >= 5
    for (modality, _, _), p in sorted(kinds.items()):
        img = loader(str(p))
        if modality == "CT":
            assert img.ndim == 3 and img.shape[2] >= 3
            assert float(img.meta["spacing"][2]) == pytest.approx(5.0)
        else:
            assert img.ndim == 2


def test_masks_on_original_grid(dataset: Path) -> None:
    rows = {r["study_id"]: r for r in _rows(dataset)}
    masks = sorted((dataset / "ground_truth" / "masks").glob("*.png"))
    assert masks
    for m in masks:
        study_id, label = m.stem.split("__")
        r = rows[study_id]
        assert label in {"nodule", "consolidation", "pneumonia"}
        assert r[f"label_{label}"] in {"1", ""}
        p = dataset / r["image_path"]
        ds = pydicom.dcmread(sorted(p.glob("*.dcm"))[0] if p.is_dir() else p, stop_before_pixels=True)
        arr = np.asarray(Image.open(m))
        assert arr.dtype == np.uint8 and arr.shape == (ds.Rows, ds.Columns)
        assert set(np.unique(arr)) <= {0, 255}
        frac = (arr > 0).mean()
        assert 0.015 <= frac <= 0.10, (m.name, frac)
    for study_id, r in rows.items():
        for label in ("nodule", "consolidation"):
            if r[f"label_{label}"] == "1" and r["image_path"]:
                assert (dataset / "ground_truth" / "masks" / f"{study_id}__{label}.png").is_file()


def test_evidence_spans_and_test_only_phrasings(dataset: Path) -> None:
    rows = {r["study_id"]: r for r in _rows(dataset)}
    evidence = json.loads((dataset / "ground_truth" / "evidence.json").read_text())
    assert set(evidence) == {s for s, r in rows.items() if r["note_text"]}

    def spans(pool: str) -> dict[tuple[str, str], list[re.Pattern[str]]]:
        out: dict[tuple[str, str], list[re.Pattern[str]]] = {}
        for label, by_pol in PHRASES[pool].items():
            for pol, templates in by_pol.items():
                for t in templates:
                    inside = re.escape(t[t.index("[") + 1 : t.index("]")])
                    inside = re.sub(r"\\\{[a-z]\\\}", r"[0-9.]+", inside)
                    out.setdefault((label, pol), []).append(re.compile(inside + "$"))
        return out

    pools = {pool: spans(pool) for pool in ("train", "val", "test")}
    polarities = set()
    for study_id, mentions in evidence.items():
        text, split = rows[study_id]["note_text"], rows[study_id]["split"]
        own = pools[split]  # each split has its own wording
        others = [pats for pool, by_key in pools.items() if pool != split for pats in by_key.values()]
        for m in mentions:
            span = text[m["start"] : m["end"]]
            key = (m["label"], m["polarity"])
            assert any(p.match(span) for p in own[key]), (study_id, span, key)
            assert not any(p.match(span) for pats in others for p in pats), (study_id, span)
            polarities.add(m["polarity"])
    assert polarities == {"affirmed", "negated", "uncertain"}


def test_phrase_pools_are_disjoint() -> None:
    def spans(pool: str) -> set[str]:
        return {t[t.index("[") + 1 : t.index("]")].lower() for by_pol in PHRASES[pool].values()
                for templates in by_pol.values() for t in templates}

    def words(pool: str) -> set[str]:
        return {w for s in spans(pool) for w in re.findall(r"[a-z]+", s)}

    assert set(PHRASES) == {"train", "val", "test"}
    assert not spans("train") & spans("test")
    assert not spans("train") & spans("val")
    assert not spans("val") & spans("test")
    test_only, val_only = {"febrile", "pyrexia", "dyspnoeic", "hunger"}, {"normothermic", "winded", "laboured"}
    assert not test_only & (words("train") | words("val"))
    assert not val_only & (words("train") | words("test"))


def test_validation_wording_option() -> None:
    assert [phrase_pool_for_split(s) for s in ("train", "val", "test")] == ["train", "val", "test"]
    assert phrase_pool_for_split("val", val_wording="training") == "train"
    with pytest.raises(ValueError, match="split"):
        phrase_pool_for_split("trainval")
    # The option changes only which templates validation notes draw from: same truth, same structure.
    for split, expect in (("val", "val"), ("train", "train")):
        for wording in ("unseen", "training"):
            note = render_note(np.random.default_rng(3), truth={"fever": 1, "dyspnea": 1}, split=split,
                               val_wording=wording)  # type: ignore[arg-type]
            pool = expect if wording == "unseen" else "train"
            for m in note.mentions:
                inside = {t[t.index("[") + 1 : t.index("]")].split("{")[0] for t in PHRASES[pool][m.label][m.polarity]}
                assert any(note.text[m.start : m.end].startswith(i) for i in inside), (split, wording, m)


def test_note_truth_drives_affirmed_mentions() -> None:
    rng = np.random.default_rng(0)
    affirmed = {0: 0, 1: 0}
    for i in range(400):
        truth = i % 2
        note = render_note(rng, truth={"fever": truth, "dyspnea": 0}, split="train")
        affirmed[truth] += any(m.label == "fever" and m.polarity == "affirmed" for m in note.mentions)
        assert not any(m.label == "dyspnea" and m.polarity == "affirmed" for m in note.mentions)
    assert affirmed[0] == 0 and 0.75 < affirmed[1] / 200 < 0.95


def test_long_notes_exist() -> None:
    note = render_note(np.random.default_rng(1), truth={"fever": 1, "dyspnea": 1}, split="test", long=True)
    assert len(note.text.split()) > 400


def test_deterministic_byte_identical(tmp_path: Path) -> None:
    opts = SyntheticOptions(image_size=48)
    generate_sample_data(tmp_path / "a", studies=25, seed=5, options=opts)
    generate_sample_data(tmp_path / "b", studies=25, seed=5, options=opts, workers=2)  # parallel: same files
    generate_sample_data(tmp_path / "c", studies=25, seed=6, options=opts)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a != c


def test_refuses_non_empty_output_and_bad_args(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_sample_data(tmp_path, studies=2, seed=0)
    with pytest.raises(ValueError, match="studies"):
        generate_sample_data(tmp_path / "x", studies=0)


def test_overwrite_replaces_generated_set(tmp_path: Path) -> None:
    opts = SyntheticOptions(image_size=48)
    generate_sample_data(tmp_path, studies=12, seed=1, options=opts)
    generate_sample_data(tmp_path, studies=10, seed=2, options=opts, overwrite=True)
    assert len(_rows(tmp_path)) == 10
    assert all(p.name.startswith("S000") and int(p.name[1:]) <= 10 for p in (tmp_path / "dicom").glob("*/*"))


def _pixels_close(new: np.ndarray, committed: np.ndarray, what: str) -> None:
    """Pixel values may differ by one grey level on a few pixels between CPUs: numpy's SIMD transcendental functions
    (exp, sin) are not bit-identical across instruction sets, and a value near .5 rounds either way. Anything more
    (a shifted lesion, another scale, another seed) fails."""
    assert new.shape == committed.shape and new.dtype == committed.dtype, what
    diff = np.abs(new.astype(np.int64) - committed.astype(np.int64))
    assert int(diff.max(initial=0)) <= 1, f"{what}: pixel values differ by {int(diff.max())}"
    n_diff = int(np.count_nonzero(diff))
    assert n_diff <= max(2, diff.size // 1000), f"{what}: {n_diff} pixels differ"


def test_committed_tiny_fixture_matches_generator(tmp_path: Path) -> None:
    """sample_data/tiny is what the generator writes for its documented arguments: every file byte-identical, except
    that DICOM pixel data and PNG masks may differ by one grey level on at most 0.1 % of the pixels (float rounding
    differs between CPUs; on one machine the generator is byte-identical, see test_deterministic_byte_identical)."""
    assert TINY.is_dir(), "sample_data/tiny missing: regenerate it (see sample_data/README.md)"
    generate_sample_data(tmp_path / "tiny", **TINY_ARGS)
    new, committed = _digest(tmp_path / "tiny"), _digest(TINY)
    assert sorted(new) == sorted(committed)
    for name in sorted(n for n in new if new[n] != committed[n]):
        a, b = tmp_path / "tiny" / name, TINY / name
        if name.endswith(".dcm"):
            da, db = pydicom.dcmread(a), pydicom.dcmread(b)
            assert da.file_meta == db.file_meta, name
            rest_a = [(e.tag, e.value) for e in da if e.tag != 0x7FE00010]
            rest_b = [(e.tag, e.value) for e in db if e.tag != 0x7FE00010]
            assert rest_a == rest_b, f"{name}: DICOM attributes differ"
            _pixels_close(da.pixel_array, db.pixel_array, name)
        elif name.endswith(".png"):
            _pixels_close(np.asarray(Image.open(a)), np.asarray(Image.open(b)), name)
        else:
            raise AssertionError(f"{name} differs from the committed fixture")
    assert sum(f.stat().st_size for f in _files(TINY)) < 3 * 1024 * 1024


def test_cli_sample_data(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from clinmm.cli import app

    res = CliRunner().invoke(app, ["sample-data", str(tmp_path / "o"), "--studies", "6", "--seed", "3",
                                   "--image-size", "48"])
    assert res.exit_code == 0, res.output
    assert len(_rows(tmp_path / "o")) == 6
    res = CliRunner().invoke(app, ["sample-data", str(tmp_path / "o"), "--studies", "6"])
    assert res.exit_code == 2 and "not empty" in res.output
    res = CliRunner().invoke(app, ["sample-data", str(tmp_path / "w"), "--studies", "6", "--val-wording", "seen"])
    assert res.exit_code == 2 and "--val-wording" in res.output and not (tmp_path / "w").exists()
    res = CliRunner().invoke(app, ["sample-data", str(tmp_path / "t"), "--studies", "20", "--seed", "3",
                                   "--image-size", "48", "--val-wording", "training"])
    assert res.exit_code == 0, res.output
    assert "validation notes in the training wording" in (tmp_path / "t" / "README.md").read_text()


def test_keyword_baseline_is_negation_blind() -> None:
    assert keyword_score("Patient denies fever.", "fever") == 1.0
    assert keyword_score("Afebrile on arrival.", "fever") == 0.0
    assert keyword_score("SOB at rest.", "dyspnea") == 1.0
    assert keyword_score("", "dyspnea") == 0.0


def test_brightest_pixel_score_sees_bright_spot() -> None:
    img = np.random.default_rng(0).normal(0, 1, (64, 64))
    base = brightest_pixel_score(img)
    img[30:34, 30:34] += 50
    assert brightest_pixel_score(img) > base + 5


def test_evaluate_baselines_on_tiny_fixture() -> None:
    res = evaluate_baselines(TINY / "manifest.csv", split="train")
    assert set(res.auroc) == {"keyword/fever", "keyword/dyspnea", "brightest_pixel/nodule",
                              "brightest_pixel/consolidation", "keyword_x_brightest/pneumonia"}
    assert all(0.0 <= v <= 1.0 for v in res.auroc.values())
    assert res.n["keyword/fever"] == sum(1 for r in _rows(TINY) if r["split"] == "train" and r["note_text"]
                                         and r["label_fever"] != "")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def test_dciodvfy_reports_no_errors(dataset: Path) -> None:
    exe = shutil.which("dciodvfy")
    if exe is None:
        if _ci():
            pytest.fail("dciodvfy (Debian dicom3tools) is required when CI=true")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    problems = []
    for f in _dicom_files(dataset):
        res = subprocess.run([exe, str(f)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
        if errors:
            problems.append((str(f.relative_to(dataset)), errors[:3]))
    assert not problems, problems[:5]


def _brightness(path: Path) -> np.ndarray:
    """Modality values of a radiograph, higher = brighter (rescale, then MONOCHROME1 inversion)."""
    ds = pydicom.dcmread(path)
    m = pydicom.pixels.apply_rescale(ds.pixel_array.astype(np.float64), ds)
    return 4095.0 - m if ds.PhotometricInterpretation == "MONOCHROME1" else m


def test_site_c_has_a_different_intensity_response(dataset: Path) -> None:
    lungs: dict[str, list[float]] = {}
    for r in _rows(dataset):
        if r["modality"] in {"CR", "DX"}:
            m = _brightness(dataset / r["image_path"])
            h, w = m.shape
            lungs.setdefault(r["site"], []).append(float(np.median(m[int(0.35 * h) : int(0.55 * h),
                                                                        int(0.22 * w) : int(0.34 * w)])))
    site_c, others = np.median(lungs["site_c"]), np.median(lungs["site_a"] + lungs["site_b"])
    assert site_c > others + 300, (site_c, others)


def test_lesion_masks_mark_brighter_tissue(dataset: Path) -> None:
    """Ground truth is where the lesion is: inside a radiograph's mask is brighter than the ring around it."""
    from scipy import ndimage

    rows = {r["study_id"]: r for r in _rows(dataset)}
    wins = total = 0
    for m in sorted((dataset / "ground_truth" / "masks").glob("*__nodule.png")):
        r = rows[m.stem.split("__")[0]]
        if r["modality"] == "CT":
            continue
        mask = np.asarray(Image.open(m)) > 0
        img = _brightness(dataset / r["image_path"])
        ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
        wins += img[mask].mean() > img[ring].mean()
        total += 1
    assert total >= 5 and wins / total >= 0.75, (wins, total)
