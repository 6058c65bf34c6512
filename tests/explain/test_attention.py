"""Attention explanations: word-piece merging, fixed scale, and orientation from DICOM to the overlay.

The orientation test writes real DICOM files (non-square, MONOCHROME1, rescale slope/intercept) with a bright lesion
in the top-left quadrant (off the diagonal, so a transpose moves it), decodes them with clinmm's ingestion, builds the
model input, and uses as "attention" the mean model-input brightness per token cell — what a perfect lesion detector
would look at. The heatmap on the original grid must peak inside the lesion, and so must the rendered overlay; a flip,
transpose, missed MONOCHROME1 inversion or ignored rescale moves or loses the peak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clinmm.config import DataConfig
from clinmm.data.transforms import Letterbox, prepare_image
from clinmm.explain.attention import IMAGE_VMAX, explain_prediction, image_map, words_from_tokens
from clinmm.explain.render import overlay_rgba
from clinmm.inference import Prediction

LABELS = ["nodule", "fever"]


def _prediction(*, probs, image_attention=None, text_attention=None, text_spans=None, key="s1", image_relevance=None,
                text_relevance=None):
    """A prediction whose relevance equals its attention unless given (a model whose every token argues for)."""
    c = len(LABELS)
    return Prediction(key=key, labels=LABELS, logits=np.zeros(c), probs=np.asarray(probs, float),
                      decisions=np.asarray(probs) >= 0.5, thresholds=np.full(c, 0.5), image_present=image_attention
                      is not None, text_present=text_attention is not None, modality_share=np.full((c, 2), 0.5),
                      image_attention=image_attention, text_attention=text_attention, text_spans=text_spans,
                      image_relevance=image_attention if image_relevance is None else image_relevance,
                      text_relevance=text_attention if text_relevance is None else text_relevance)


class _Sample:
    def __init__(self, letterbox=None, note_text=None):
        self.letterbox = letterbox
        self.note_text = note_text


def test_word_pieces_merge_into_words_with_original_spans():
    text = "Pt is febrile today."
    # tokens: [CLS] pt is fe ##bri ##le today .
    spans = np.array([[0, 0], [0, 2], [3, 5], [6, 8], [8, 11], [11, 13], [14, 19], [19, 20]])
    scores = np.array([0.3, 0.05, 0.05, 0.2, 0.1, 0.1, 0.1, 0.1])
    words = words_from_tokens(text, scores, spans, prob=1.0)
    assert [w.text for w in words] == ["Pt", "is", "febrile", "today", "."]
    feb = words[2]
    assert (feb.start, feb.end) == (6, 13) and feb.score == pytest.approx(0.4)
    assert text[feb.start : feb.end] == "febrile"


def test_top_words_skip_punctuation_and_rank_by_score():
    text = "No fever. Short of breath!"
    spans = np.array([[0, 2], [3, 8], [8, 9], [10, 15], [16, 18], [19, 25], [25, 26]])
    scores = np.array([0.05, 0.1, 0.5, 0.05, 0.05, 0.2, 0.05])
    words = words_from_tokens(text, scores, spans)
    pred = _prediction(probs=[0.1, 0.9], text_attention=np.stack([scores, scores]), text_spans=spans)
    exp = explain_prediction(_Sample(note_text=text), pred)
    top = exp.label("fever").top_words(2)
    assert [w.text for w in top] == ["breath", "fever"]
    assert len(words) == 7


def test_fixed_scale_negative_study_stays_cold():
    """Same attention, different probability: heat scales with the probability, never re-stretched to the max."""
    box = Letterbox.fit((64, 64), 64)
    att = np.full((4, 4), 0.2 / 16)
    att[0, 0] = 0.8 + 0.2 / 16  # a peaked attention map (sums to 1 over image tokens)
    hot = image_map(att, box, prob=0.9, relative_to=16)
    cold = image_map(att, box, prob=0.02, relative_to=16)
    assert hot.peak == cold.peak
    assert cold.heat.max() == pytest.approx(hot.heat.max() * 0.02 / 0.9, rel=1e-4)
    assert cold.heat.max() < 0.1 * IMAGE_VMAX  # below the overlay's transparency floor
    gray = np.full((64, 64), 0.5)
    assert np.allclose(overlay_rgba(gray, cold.heat), 0.5)  # the negative study's overlay leaves the image untouched
    assert not np.allclose(overlay_rgba(gray, hot.heat), 0.5)


def test_missing_attention_raises():
    pred = _prediction(probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="explain=True"):
        explain_prediction(_Sample(), pred)


def _write_dicom(path: Path, brightness: np.ndarray, *, photometric: str, slope: float, intercept: float) -> None:
    from clinmm.data.synthetic.dicom_writer import DicomStudyInfo, RadiographEncoding, write_radiograph
    from clinmm.data.synthetic.generate import SITES

    info = DicomStudyInfo(seed=1, study_id="T1", patient_id="P1", patient_name="SYNTHETIC^P1", sex="F",
                          birth_date="19700101", age_years=50, study_date="20240101", study_time="120000",
                          accession="ACC1", site=SITES[0])
    write_radiograph(path, brightness, info=info, encoding=RadiographEncoding(
        modality="CR", view="PA", photometric=photometric, slope=slope, intercept=intercept))


@pytest.mark.parametrize("photometric,slope,intercept", [("MONOCHROME2", 1.0, 0.0), ("MONOCHROME1", 1.0, 0.0),
                                                         ("MONOCHROME2", 2.0, -1000.0),
                                                         ("MONOCHROME1", 1.5, -512.0)])
def test_orientation_lesion_top_left_peaks_top_left(tmp_path, photometric, slope, intercept):
    from clinmm.io.load import load_image

    rows, cols = 200, 128  # tall, non-square: padding left/right in the letterbox
    rng = np.random.default_rng(0)
    img = 0.35 + 0.02 * rng.standard_normal((rows, cols))
    y, x = np.mgrid[:rows, :cols]
    cy, cx, r = 0.2 * rows, 0.36 * cols, 10  # top-left quadrant, off the diagonal: a transpose moves it
    lesion = (y - cy) ** 2 + (x - cx) ** 2 <= r**2
    img[lesion] = 0.95
    path = tmp_path / "lesion.dcm"
    _write_dicom(path, np.clip(img, 0, 1), photometric=photometric, slope=slope, intercept=intercept)

    volume = load_image(path)
    prepared = prepare_image(volume, config=DataConfig(image_size=128))
    grid = (8, 8)
    oracle = F.adaptive_avg_pool2d(prepared.tensor[None], grid)[0, 0].numpy()  # (8, 8) brightness per token
    att = oracle / oracle.sum()
    pred = _prediction(probs=[0.9, 0.1], image_attention=np.stack([att, att]), text_attention=None)
    exp = explain_prediction(_Sample(letterbox=prepared.letterbox), pred)
    heat = exp.label("nodule").image.heat
    assert heat.shape == (rows, cols)  # original grid, not transposed, padding removed
    radius = (128 / 8) / prepared.letterbox.scale / 2  # half a token stride in original pixels
    dilated = (y - cy) ** 2 + (x - cx) ** 2 <= (r + radius) ** 2
    pr, pc = exp.label("nodule").image.peak
    assert dilated[pr, pc], f"peak at {(pr, pc)}, lesion at {(cy, cx)}"
    # The overlay drawn from the display image: the most coloured pixel is in the lesion too.
    display = volume.display[0]
    assert display.shape == (rows, cols)
    assert display[lesion].mean() > display[~lesion].mean() + 0.3  # MONOCHROME1 inverted, rescale applied
    rgb = overlay_rgba(display, heat)
    change = np.abs(rgb - display[..., None]).sum(-1)
    orr, occ = np.unravel_index(int(np.argmax(np.where(dilated, change, 0) if change[dilated].max() > 0 else change)),
                                change.shape)
    assert change[dilated].max() >= change[~dilated].max() - 1e-6
    assert dilated[orr, occ]


def test_grid_3d_gives_per_slice_maps():
    box = Letterbox.fit((40, 60), 32)
    att = np.zeros((3, 4, 4))
    att[2, 0, 3] = 1.0
    m = image_map(att, box, prob=1.0, relative_to=48)
    assert m.heat.shape == (3, 40, 60)
    s, r, c = m.peak
    assert s == 2 and r < 20 and c >= 30


def test_modality_share_and_json_roundtrip():
    import json

    text = "fever"
    pred = _prediction(probs=[0.2, 0.8], image_attention=np.full((2, 2, 2), 0.1), text_attention=np.array([[0.6],
                                                                                                           [0.6]]),
                       text_spans=np.array([[0, 5]]))
    exp = explain_prediction(_Sample(letterbox=Letterbox.fit((10, 10), 8), note_text=text), pred)
    d = json.loads(json.dumps(exp.to_dict()))
    assert d["labels"][1]["modality_share"] == {"image": 0.5, "text": 0.5}
    assert d["labels"][1]["top_words"][0]["text"] == "fever"
    assert torch.isfinite(torch.tensor(exp.label("fever").image.heat)).all()


def test_relevance_weighting_keeps_tokens_that_argue_against_cold():
    """The default (token relevance) shows positive evidence only: a negated mention the label attends to but that
    lowers its logit gets no heat; ``weighting="raw"`` shows the attention itself."""
    text = "No fever. Fever today."
    spans = np.array([[0, 2], [3, 8], [8, 9], [10, 15], [16, 21], [21, 22]])
    attention = np.array([0.3, 0.3, 0.0, 0.2, 0.2, 0.0])  # looks at both mentions
    relevance = np.array([-0.8, -0.4, 0.0, 0.9, 0.3, 0.0])  # "No fever" pushes the label down
    pred = _prediction(probs=[0.1, 0.9], text_attention=np.stack([attention, attention]), text_spans=spans,
                       text_relevance=np.stack([relevance, relevance]))
    exp = explain_prediction(_Sample(note_text=text), pred)
    words = {(w.start, w.text): w for w in exp.label("fever").words}
    assert words[(0, "No")].heat == 0 and words[(3, "fever")].heat == 0
    assert words[(10, "Fever")].heat > words[(16, "today")].heat > 0
    assert exp.label("fever").top_words(1)[0].start == 10
    raw = explain_prediction(_Sample(note_text=text), pred, weighting="raw")
    assert raw.method == "raw_attention" and raw.label("fever").top_words(1)[0].start in (0, 3)
    with pytest.raises(ValueError, match="weighting"):
        explain_prediction(_Sample(note_text=text), pred, weighting="rollout")


def test_relevance_weighting_shares_positive_evidence_across_modalities():
    """Image and note shares of positive relevance add up to one per label, so a label driven by the note stays cool
    on the image."""
    box = Letterbox.fit((8, 8), 8)
    img_rel = np.zeros((2, 2, 2))
    img_rel[:, 0, 0] = 0.1
    txt_rel = np.array([[0.9], [0.9]])
    pred = _prediction(probs=[0.9, 0.9], image_attention=np.full((2, 2, 2), 0.25), text_attention=np.ones((2, 1)),
                       text_spans=np.array([[0, 5]]), image_relevance=img_rel, text_relevance=txt_rel)
    exp = explain_prediction(_Sample(letterbox=box, note_text="fever"), pred)
    le = exp.label("nodule")
    assert le.image.grid.sum() / 4 + le.words[0].heat / 1 == pytest.approx(0.9, rel=1e-5)  # shares × n × prob
    assert le.image.grid.max() == pytest.approx(0.1 * 4 * 0.9, rel=1e-5)
