"""The case panel: the image view on a CT series (slice scroller, CT window presets, heatmap only on the slice
read) and the study-check banners."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _panel() -> None:
    import numpy as np

    from clinmm.io.study import ImageVolume
    from dashboards.case_panel import image_panel, missing_banners
    from dashboards.case_result import CaseResult

    pixels = np.linspace(-1000, 1000, 5 * 12 * 10, dtype=np.float32).reshape(5, 12, 10)  # (S, H, W) HU
    volume = ImageVolume(pixels=pixels, display=(pixels + 1000) / 2000, modality="CT")
    heat = np.zeros((12, 10), np.float32)
    heat[3:6, 4:7] = 3.0
    result = CaseResult(labels=["nodule"], probs=np.array([0.8]), decisions=np.array([1]), thresholds=np.array([0.5]),
                        image_present=True, note_present=False, source="live", heatmaps={"nodule": heat},
                        heat_slice=2, heat_carried=True)
    missing_banners(result)
    image_panel(volume, result, key="t")


def test_ct_series_slice_scroller_presets_and_heatmap_slice() -> None:
    at = AppTest.from_function(_panel, default_timeout=60).run()
    assert not at.exception
    assert "No clinical note" in "".join(w.value for w in at.warning)
    assert at.slider(key="t_slice").value == 2  # opens on the slice the model read
    options = at.selectbox(key="t_preset").options
    assert options[0].startswith("DICOM window") and {"Lung", "Mediastinum", "Bone", "Brain"} <= set(options)
    at.selectbox(key="t_preset").set_value("Lung").run()
    assert at.slider(key="t_center_Lung").value == -600.0 and at.slider(key="t_width_Lung").value == 1500.0
    at.toggle(key="t_heat_on").set_value(True).run()
    assert len(at.image) == 2  # overlay + colour bar
    assert "traced back to the image region it was read from" in "".join(c.value for c in at.caption)
    at.slider(key="t_slice").set_value(4).run()
    assert len(at.image) == 1 and "scroll there" in "".join(c.value for c in at.caption)


def _check_banners() -> None:
    import numpy as np

    from clinmm.scoring.study_check import StudyCheck
    from dashboards.case_panel import study_check_banners
    from dashboards.case_result import CaseResult

    check = StudyCheck(scope_violations=["modality:CT"],
                       unlike_training=["image rows 16 is outside the training images' range [480, 520]"],
                       checked=["scope", "intensity", "grid"])
    result = CaseResult(labels=["nodule"], probs=np.array([0.8]), decisions=np.array([1]), thresholds=np.array([0.5]),
                        image_present=True, note_present=True, source="live", check=check,
                        scope_message=check.scope_message({"modalities": ["CR", "DX"]}))
    study_check_banners(result)
    study_check_banners(CaseResult(labels=["nodule"], probs=np.array([0.8]), decisions=np.array([1]),
                                   thresholds=np.array([0.5]), image_present=True, note_present=True,
                                   source="stored", check=StudyCheck(codes=["intensity:p95"])))  # stored row
    study_check_banners(CaseResult(labels=["nodule"], probs=np.array([0.8]), decisions=np.array([1]),
                                   thresholds=np.array([0.5]), image_present=True, note_present=True,
                                   source="live", check=StudyCheck(checked=["scope"])))  # in scope, usual: silent


def test_study_check_banners_out_of_scope_error_and_unlike_training_warning() -> None:
    at = AppTest.from_function(_check_banners, default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and "outside the model's scope (modality:CT)" in at.error[0].value
    assert "trained on CR, DX images" in at.error[0].value
    assert len(at.warning) == 2 and "unlike the images the model was trained on" in at.warning[0].value
    assert "image rows 16" in at.warning[0].value
    assert "intensity p95 outside the training images' range" in at.warning[1].value
