"""The single-study check: scope (a missing Modality is out of scope) and "unlike the training images" warnings, on
synthetic references, on a real pydicom CR, through `clinmm explain` and `clinmm score`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from clinmm.cli import app
from clinmm.data.transforms import Letterbox
from clinmm.scoring.study_check import ScopeRule, check_study

from .conftest import LABELS

SCOPE = {"modalities": ["CR", "DX"], "views": ["AP", "PA"], "body_parts": ["CHEST"]}


def _reference(rng, n=500):
    return {"intensity": {"mean": list(rng.normal(1000, 50, n)), "std": list(rng.normal(300, 20, n)),
                          "p05": list(rng.normal(200, 20, n)), "p95": list(rng.normal(1800, 60, n))},
            "grid": {"rows": list(rng.integers(480, 520, n)), "cols": list(rng.integers(400, 440, n))}}


def _sample(*, modality="DX", view="PA", mean=1000.0, rows=500, image=True):
    return SimpleNamespace(image=object() if image else None,
                           meta={"Modality": modality, "ViewPosition": view, "BodyPartExamined": "CHEST"},
                           image_stats={"mean": mean, "std": 300.0, "p05": 200.0, "p95": 1800.0},
                           letterbox=Letterbox.fit((rows, 420), 64))


def test_scope_rule_missing_modality_is_a_violation_blank_view_is_not():
    rule = ScopeRule.from_checkpoint(SCOPE)
    assert rule.violations("", "", "") == ["modality:missing"]
    assert rule.violations("DX", "", "") == []
    assert ScopeRule.from_checkpoint({}).violations("", "", "") == []  # a scope naming no modality accepts any


def test_check_study_flags_scope_and_each_statistic_outside_the_training_range():
    ref = _reference(np.random.default_rng(0))
    ok = check_study(_sample(), scope=SCOPE, reference=ref)
    assert ok.in_scope and ok.unlike_training == [] and ok.checked == ["scope", "intensity", "grid"]
    far = check_study(_sample(mean=5000.0, rows=16), scope=SCOPE, reference=ref)
    assert far.in_scope and len(far.unlike_training) == 2
    assert "raw intensity mean 5000" in far.unlike_training[0] and "image rows 16" in far.unlike_training[1]
    ct = check_study(_sample(modality="CT", view="LL"), scope=SCOPE, reference=ref)
    assert ct.scope_violations == ["modality:CT", "view:LL"]
    assert "outside the model's scope (modality:CT; view:LL)" in ct.scope_message(SCOPE) and "CR, DX" in \
        ct.scope_message(SCOPE)
    assert check_study(_sample(modality=""), scope=SCOPE, reference=ref).scope_violations == ["modality:missing"]
    none = check_study(_sample(image=False), scope=SCOPE, reference=ref)
    assert none.in_scope and none.checked == [] and none.to_dict()["unlike_training"] == []
    few = {"intensity": {k: v[:10] for k, v in ref["intensity"].items()}}  # too few training images: no verdict
    assert check_study(_sample(mean=5000.0), scope=SCOPE, reference=few).unlike_training == []
    with pytest.raises(ValueError, match="coverage"):
        check_study(_sample(), scope=SCOPE, reference=ref, coverage=1.0)


@pytest.fixture(scope="module")
def synthetic_reference(tmp_path_factory):
    """Builder + a reference from 90 generated radiographs, the way training records it (clinmm.train)."""
    from clinmm.config import demo_config
    from clinmm.data.dataset import SampleBuilder
    from clinmm.data.manifest import read_manifest
    from clinmm.data.synthetic.generate import SyntheticOptions, generate_sample_data
    from clinmm.train import _reference_stats

    out = tmp_path_factory.mktemp("ref") / "d"
    generate_sample_data(out, studies=120, seed=11, options=SyntheticOptions(image_size=64, ct_fraction=0.0))
    cfg = demo_config()
    cfg.data.image_size = 64
    builder = SampleBuilder(data_config=cfg.data, tokenizer=None)
    man = read_manifest(out / "manifest.csv")
    samples = {split: [builder.build(r.image_path, None, key=str(r.image_path)) for r in man.split(split)
                       if r.image_path] for split in ("train", "test")}
    samples = {k: [s for s in v if s.image is not None and s.meta.get("Modality") in ("CR", "DX")]
               for k, v in samples.items()}
    ref = _reference_stats(samples["train"], np.zeros((1, 1)), ["x"])
    scope = {"modalities": ["CR", "DX"]}
    return builder, ref, scope, samples["test"]  # held-out samples keyed by their image path


def test_real_pydicom_cr_is_unlike_synthetic_training_images_held_out_studies_are_not(synthetic_reference):
    """A real 16×16 MONOCHROME1 CR from pydicom's test files against a reference of synthetic radiographs: in scope
    (CR) but flagged; held-out synthetic studies of the same generator pass."""
    import pydicom

    builder, ref, scope, held_out = synthetic_reference
    assert len(ref["grid"]["rows"]) >= 20 and len(ref["intensity"]["mean"]) >= 20
    cr = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033" / "CR1" / "6154"
    check = check_study(builder.build(cr, None), scope=scope, reference=ref)
    assert check.in_scope and check.checked == ["scope", "intensity", "grid"]
    assert any(line.startswith("image rows 16") for line in check.unlike_training)
    flagged = [s.key for s in held_out if check_study(s, scope=scope, reference=ref).unlike_training]
    assert len(held_out) >= 10 and len(flagged) <= 0.2 * len(held_out), flagged


def _dx_without_modality(path: Path) -> None:
    import pydicom

    from clinmm.data.synthetic.dicom_writer import DicomStudyInfo, RadiographEncoding, write_radiograph
    from clinmm.data.synthetic.generate import SITES

    info = DicomStudyInfo(seed=3, study_id="T3", patient_id="P3", patient_name="SYNTHETIC^P3", sex="F",
                          birth_date="19700101", age_years=54, study_date="20240303", study_time="101000",
                          accession="ACC3", site=SITES[0])
    img = np.full((80, 64), 0.3)
    img[10:20, 10:20] = 0.9
    write_radiograph(path, img, info=info, encoding=RadiographEncoding(modality="DX", view="PA",
                                                                       photometric="MONOCHROME2"))
    ds = pydicom.dcmread(path)
    del ds.Modality
    ds.save_as(path)


def test_explain_refuses_a_study_without_modality_unless_forced(tiny_checkpoint, tmp_path):
    study = tmp_path / "nomod.dcm"
    _dx_without_modality(study)
    res = CliRunner().invoke(app, ["explain", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                                   str(study), "--device", "cpu"])
    assert res.exit_code == 2 and "outside the model's scope (modality:missing)" in res.output
    assert "--force-scope" in res.output and not (tmp_path / "o").exists()  # nothing written
    res = CliRunner().invoke(app, ["explain", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                                   str(study), "--device", "cpu", "--force-scope"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "o" / "attention" / "explanation.json").read_text())
    assert data["study_check"]["in_scope"] is False and data["study_check"]["scope_violations"] == ["modality:missing"]


def test_score_puts_a_study_without_modality_out_of_scope(tiny_checkpoint, salt_file, tmp_path):
    from clinmm.score import ScoreOptions, score

    folder = tmp_path / "in" / "s1"
    folder.mkdir(parents=True)
    _dx_without_modality(folder / "a.dcm")
    out = tmp_path / "out"
    score(tmp_path / "in", tiny_checkpoint, out, options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file))
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["status"] == "out_of_scope" and rows[0]["scope"] == "modality:missing"
    assert rows[0][f"prob_{LABELS[0]}"] == ""


def test_batch_scoring_flags_studies_unlike_the_training_images(synthetic_reference, salt_file, tmp_path):
    """`clinmm score`'s `unlike_training` column: the real pydicom CR is flagged with compact codes; generated
    radiographs from the training generator are not."""
    import shutil

    import pydicom
    import torch

    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import build_model, save_checkpoint
    from clinmm.config import demo_config
    from clinmm.score import ScoreOptions, score

    _, ref, scope, held_out = synthetic_reference
    torch.manual_seed(0)
    cfg = demo_config()
    cfg.data.image_size = 64
    cfg.text.max_length = 32
    cfg.text.stride = 8
    model = build_model(cfg, LABELS).eval()
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, model=model, config=cfg, labels=LABELS,
                    calibration=[LabelCalibration(threshold=0.5) for _ in LABELS], scope=scope,
                    model_card={"name": "clinmm-test-untrained"}, reference=ref)
    root = tmp_path / "in"
    cr = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033" / "CR1" / "6154"
    (root / "real").mkdir(parents=True)
    shutil.copy(cr, root / "real" / "cr.dcm")
    for i, s in enumerate(held_out[:3]):
        (root / f"syn{i}").mkdir()
        shutil.copy(s.key, root / f"syn{i}" / "a.dcm")
    out = tmp_path / "out"
    score(root, ckpt, out, options=ScoreOptions(workers=0, device="cpu", salt_file=salt_file))
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        rows = {r["source_path"].split("/")[0]: r for r in csv.DictReader(fh)}
    assert rows["real"]["status"] == "ok" and "grid:rows" in rows["real"]["unlike_training"].split(";")
    assert [rows[f"syn{i}"]["unlike_training"] for i in range(3)] == ["", "", ""]
