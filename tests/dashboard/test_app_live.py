"""The case view and the score-one-study page with a real (untrained) model: live scoring and explanations."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dashboard_fabricate import write_cr
from streamlit.testing.v1 import AppTest

from dashboards import APP_PATH

pytestmark = pytest.mark.slow


def test_live_result_maps_explanations_onto_the_original_grid(live_checkpoint: Path, tmp_path: Path) -> None:
    from clinmm.inference import Predictor
    from clinmm.io.load import load_image
    from dashboards.case_result import live_result

    predictor = Predictor.from_path(live_checkpoint, device="cpu")
    volume = load_image(write_cr(tmp_path / "x.dcm", rows=60, cols=44))
    note = "Fever since yesterday. Short of breath on exertion. " * 3
    result = live_result(predictor, volume, note, key="k")
    assert result.source == "live" and result.image_present and result.note_present
    assert result.labels == predictor.labels and result.probs.shape == (len(result.labels),)
    assert np.isfinite(result.probs).all() and ((result.probs >= 0) & (result.probs <= 1)).all()
    assert set(result.heatmaps) == set(result.labels)
    for heat in result.heatmaps.values():
        assert heat.shape == (60, 44) and heat.min() >= 0.0 and np.isfinite(heat).all()  # original pixel grid
    for words in result.note_words.values():
        assert words and all(0 <= w.start < w.end <= len(note) and note[w.start:w.end] == w.text for w in words)
    shares = np.array(list(result.modality_share.values()))  # (C, 2)
    if predictor.loaded.model.head_stack is None:
        assert np.allclose(shares.sum(axis=1), 1.0, atol=1e-3)
    else:  # stacked (the demo configuration): signed, what each modality adds, magnitudes summing to 1
        assert np.allclose(np.abs(shares).sum(axis=1), 1.0, atol=1e-3)
        added = np.array([[result.probs[c] - result.without[l][0], result.probs[c] - result.without[l][1]]
                          for c, l in enumerate(result.labels)])  # the probability each modality adds
        big = np.abs(added) > 1e-4
        assert np.array_equal(np.sign(shares[big]), np.sign(added[big]))
    no_image = live_result(predictor, None, note)
    assert not no_image.image_present and not no_image.heatmaps and no_image.note_words
    # "without image": the same number as scoring the study with its image missing
    without_image = np.array([result.without[l][0] for l in result.labels])
    assert np.allclose(without_image, no_image.probs, atol=1e-5)
    assert all(v[0] is None for v in no_image.without.values())  # nothing to remove
    assert "without image" in result.table()[0] and "image share" not in result.table()[0]
    no_note = live_result(predictor, volume, "")
    assert not no_note.note_present and not no_note.note_words and no_note.heatmaps


def test_case_view_live_and_upload_page(monkeypatch: pytest.MonkeyPatch, live_checkpoint: Path, scores_dir: Path,
                                        tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", [str(APP_PATH), "--scores", str(scores_dir), "--model", str(live_checkpoint),
                                      "--db", f"sqlite:///{tmp_path / 'fb.sqlite'}"])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    at = AppTest.from_file(str(APP_PATH), default_timeout=300)
    at.run()
    key = pd.read_parquet(scores_dir / "predictions.parquet").set_index("study_id").loc["s001", "study_key"]
    at.query_params["study"] = key
    at.switch_page("app_pages/case.py").run()
    assert not at.exception
    assert "Source: live model" in "\n".join(c.value for c in at.caption)
    n_images = len(at.image)
    at.toggle(key="case_heat_on").set_value(True).run()
    assert not at.exception and len(at.image) == n_images + 1  # overlay + legend instead of the plain image
    notes = [h.proto.body for h in at.get("html")]
    assert any("<mark" in body or "background" in body for body in notes)  # evidence words highlighted
    # Score one study: upload a DICOM and a note.
    at.switch_page("app_pages/upload.py").run()
    dicom = write_cr(tmp_path / "upload.dcm", seed=9).read_bytes()
    at.file_uploader(key="upload_file").set_value(("study.dcm", dicom, "application/dicom"))
    at.text_area(key="upload_note").input("Fever and productive cough.")
    at.button[[b.label for b in at.button].index("Score and explain")].click().run()
    assert not at.exception
    assert "Source: live model" in "\n".join(c.value for c in at.caption)
    assert not list((tmp_path / "tmp").glob("clinmm-upload-*"))  # the temp folder is gone
    # An upload outside the model's scope (no Modality attribute; the model knows CR/DX): refused with the reason,
    # shown only on request, and then under a red banner.
    import pydicom

    bad = tmp_path / "nomod.dcm"
    ds = pydicom.dcmread(write_cr(bad, seed=10))
    del ds.Modality
    ds.save_as(bad)
    at.file_uploader(key="upload_file").set_value(("nomod.dcm", bad.read_bytes(), "application/dicom"))
    at.button[[b.label for b in at.button].index("Score and explain")].click().run()
    assert not at.exception
    errors = "\n".join(e.value for e in at.error)
    assert "Not scored: this study is outside the model's scope (modality:missing)" in errors
    assert "Source: live model" not in "\n".join(c.value for c in at.caption)  # no probabilities shown
    at.button[[b.label for b in at.button].index("Show the result anyway (outside validated use)")].click().run()
    assert not at.exception
    assert "Source: live model" in "\n".join(c.value for c in at.caption)
    assert any("outside the model's scope" in e.value for e in at.error)  # the banner stays above the result
