"""``clinmm explain``: PNG per label, note HTML, JSON of numbers; errors exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from clinmm.cli import app


def _dicom(path):
    from clinmm.data.synthetic.dicom_writer import DicomStudyInfo, RadiographEncoding, write_radiograph
    from clinmm.data.synthetic.generate import SITES

    info = DicomStudyInfo(seed=2, study_id="T2", patient_id="P2", patient_name="SYNTHETIC^P2", sex="M",
                          birth_date="19600101", age_years=64, study_date="20240202", study_time="101000",
                          accession="ACC2", site=SITES[1])
    img = np.full((90, 72), 0.3)
    img[20:30, 15:25] = 0.9
    write_radiograph(path, img, info=info, encoding=RadiographEncoding(modality="DX", view="PA",
                                                                       photometric="MONOCHROME1"))


def test_cli_explain_writes_overlays_note_and_json(tiny_checkpoint, tmp_path):
    study = tmp_path / "study.dcm"
    _dicom(study)
    note = tmp_path / "note.txt"
    note.write_text("History: <b>febrile</b> overnight, no dyspnoea.", encoding="utf-8")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["explain", "--model", str(tiny_checkpoint), "--out", str(out), str(study),
                                   "--note", str(note), "--device", "cpu", "--method", "attention", "--method",
                                   "hirescam"])
    assert res.exit_code == 0, res.output
    files = json.loads(res.stdout[res.stdout.index("{"):])["files"]
    assert "attention/nodule.png" in files and "attention/note.html" in files
    assert "hirescam/nodule.png" in files  # a class activation map: image overlays on the same original grid
    cam = json.loads((out / "hirescam" / "explanation.json").read_text())
    assert cam["method"] == "hirescam" and cam["labels"][0]["image"]["shape"] == [90, 72]
    data = json.loads((out / "attention" / "explanation.json").read_text())
    assert data["method"] == "attention" and len(data["labels"]) == 5
    first = data["labels"][0]
    assert first["image"]["shape"] == [90, 72]  # the original DICOM grid
    assert set(first["modality_share"]) == {"image", "text"}
    html = (out / "attention" / "note.html").read_text()
    assert "<b>febrile" not in html and "&lt;b&gt;" in html
    assert (out / "attention" / "nodule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_explain_bad_model_exits_2(tmp_path):
    res = CliRunner().invoke(app, ["explain", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                                   "--device", "cpu"])
    assert res.exit_code == 2
    assert "error:" in res.output


def test_cli_faithfulness_writes_the_report_json(tiny_checkpoint, tmp_path):
    """`clinmm faithfulness` on a generated set (with ground truth): the JSON the report reads, with every headline
    measure for the dashboard's method; the report renders it as a table."""
    from clinmm.data.synthetic.generate import SyntheticOptions, generate_sample_data
    from clinmm.explain.faithfulness import summary_rows

    data = tmp_path / "data"
    generate_sample_data(data, studies=40, seed=4, options=SyntheticOptions(image_size=64, ct_fraction=0.0))
    out = tmp_path / "faith.json"
    res = CliRunner().invoke(app, ["faithfulness", "--model", str(tiny_checkpoint), "--manifest",
                                   str(data / "manifest.csv"), "--out", str(out), "--max-studies", "12",
                                   "--max-steps", "4"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["ground_truth"] is True and result["n_random"] == 10 and set(result["methods"]) == {"attention"}
    rows = summary_rows(result)
    assert [r["measure"].split(" ")[0] for r in rows] == ["image", "a", "negated", "deletion", "deletion"]
    assert all(r["method"] == "attention" and (r["rate"] is None or 0 <= r["rate"] <= 1) for r in rows)
    assert any(r["n"] > 0 for r in rows)
    # a class activation map: image measures only (no note part), under its own name
    res = CliRunner().invoke(app, ["faithfulness", "--model", str(tiny_checkpoint), "--manifest",
                                   str(data / "manifest.csv"), "--out", str(out), "--max-studies", "12",
                                   "--max-steps", "4", "--method", "hirescam"])
    assert res.exit_code == 0, res.output
    cam = json.loads(out.read_text())["methods"]["hirescam"]
    assert cam["pointing_image_all_sizes"]["n"] > 0 and cam["deletion"]["image"]["n"] > 0
    assert cam["pointing_text_top3"]["n"] == 0 and cam["deletion"]["text"]["n"] == 0
    bad = CliRunner().invoke(app, ["faithfulness", "--model", str(tmp_path / "nope"), "--manifest",
                                   str(data / "manifest.csv"), "--out", str(out)])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_healthy_donors_are_image_negative_training_studies_grouped_by_geometry(tiny_checkpoint, tmp_path):
    """The healthy fill's donors: only train-split studies negative for every image finding, on the model grid,
    grouped by letterbox geometry; with none qualifying, an error that says so; `--deletion-fill healthy` runs."""
    import torch

    from clinmm.data.manifest import read_manifest
    from clinmm.data.synthetic.generate import SyntheticOptions, generate_sample_data
    from clinmm.explain.faithfulness import healthy_donors
    from clinmm.inference import Predictor

    data = tmp_path / "data"
    generate_sample_data(data, studies=40, seed=4, options=SyntheticOptions(image_size=64, ct_fraction=0.0))
    predictor = Predictor.from_path(tiny_checkpoint, keep_display=False)
    man = read_manifest(data / "manifest.csv", labels=predictor.labels)
    img_idx = [predictor.labels.index("nodule"), predictor.labels.index("consolidation")]
    train = man.split("train")
    negatives = [r for r in train if all(r.labels[c] == 0 for c in img_idx)]
    assert 0 < len(negatives) < len(train)
    pools = healthy_donors(predictor, train, image_label_indices=img_idx, max_studies=5)
    assert sum(len(v) for v in pools.values()) == min(5, len(negatives))
    for r in negatives[:5]:
        sample = predictor.prepare(r.image_path, None)
        box = sample.letterbox
        pool = pools[(box.size, *box.resized, box.pad_top, box.pad_left)]
        image = predictor.collate([sample]).inputs.image[0]  # (1, H, W)
        assert pool.shape[1:] == image.shape and any(torch.equal(d, image) for d in pool)
    positives = [r for r in train if any(r.labels[c] == 1 for c in img_idx)]
    with pytest.raises(ValueError, match="no 2D study negative"):
        healthy_donors(predictor, positives, image_label_indices=img_idx)
    out = tmp_path / "faith.json"
    res = CliRunner().invoke(app, ["faithfulness", "--model", str(tiny_checkpoint), "--manifest",
                                   str(data / "manifest.csv"), "--out", str(out), "--max-studies", "6",
                                   "--max-steps", "4", "--deletion-fill", "healthy", "--healthy-donors", "2"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["deletion_fill"] == "healthy" and result["healthy_donors_per_study"] == 2
    assert result["methods"]["attention"]["deletion"]["image"]["n"] > 0
    # a manifest without training studies: no donors, so the default falls back to the mean fill and says so
    import pandas as pd

    frame = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    frame[frame["split"] == "test"].to_csv(data / "test_only.csv", index=False)
    res = CliRunner().invoke(app, ["faithfulness", "--model", str(tiny_checkpoint), "--manifest",
                                   str(data / "test_only.csv"), "--out", str(out), "--max-studies", "4",
                                   "--max-steps", "4"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["deletion_fill"] == "mean" and result["healthy_donors_per_study"] == 0
