"""Image relevance carried back by occlusion with a healthy reference (clinmm.explain.occlusion).

A stand-in model whose every token reads the cell to its right (the learned offset of docs/explanations.md,
"Measured (fourteenth session)", made exact) puts a lesion's relevance on the lesion's left neighbour; carried back,
it must land on the lesion's own cell, with every label's sum kept. Then the real path: a checkpoint that asks for
the carry stores its reference, and ``Predictor`` returns carried relevance that adds up to the uncarried.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clinmm.data.transforms import Letterbox
from clinmm.explain.occlusion import (
    MIN_REFERENCE_STUDIES,
    carry_image_relevance,
    fit_healthy_reference,
    reference_fill,
)
from clinmm.io.study import ImageVolume
from clinmm.models.classifier import ModelInputs

GRID = (2, 3)  # token grid (h, w); each cell 2 × 2 pixels of a 4 × 6 input


class _OffsetModel:
    """Token (r, c) reads the mean of cell (r, c + 1) (wrapping); label 0's relevance of a token is its reading,
    label 1's minus it; the note has one token of relevance 0.5 for both labels."""

    def __init__(self) -> None:
        self.image_calls = 0

    @staticmethod
    def noise(permutations: int) -> torch.Tensor:
        """Sampled orderings' error: the same for every input (common orderings); only at 8 orderings, which the
        test of that case asks for (every other test reads exact values)."""
        if permutations != 8:
            return torch.zeros(6)
        return torch.tensor([-0.3, -0.2, 0.5, 0.1, -0.4, 0.2])

    def forward_text(self, inputs):
        b = inputs.image.shape[0]
        return torch.zeros(b, 1, 2), torch.ones(b, 1, dtype=torch.bool), None

    def forward_image(self, image, present):  # (n, 1, 4, 6) → (n, 6, 1)
        self.image_calls += image.shape[0]
        cells = image.reshape(image.shape[0], 2, 2, 3, 2).mean((2, 4))  # (n, 2, 3)
        tokens = cells.roll(-1, dims=2).reshape(image.shape[0], 6, 1)  # token (r, c) ← cell (r, c + 1)
        return tokens, present[:, None].expand(-1, 6), GRID

    def token_relevance(self, img, img_mask, txt, txt_mask, *, image_present, text_present, image_only=False,
                        permutations=32):
        r = img[..., 0] + self.noise(permutations)  # (n, 6)
        if image_only:
            return torch.stack([r, -r], 1)  # (n, 2, 6)
        note = torch.full((r.shape[0], 1), 0.5)
        return torch.stack([torch.cat([r, note], 1), torch.cat([-r, note], 1)], 1)  # (n, 2, 7)


def _inputs(image: torch.Tensor, present: bool = True) -> ModelInputs:
    b = image.shape[0]
    return ModelInputs(image=image, image_present=torch.full((b,), present), input_ids=torch.zeros(b, 1, 2).long(),
                       attention_mask=torch.ones(b, 1, 2).long(), keep=torch.ones(b, 1, 2, dtype=torch.bool),
                       text_present=torch.ones(b, dtype=torch.bool))


def _lesion_image() -> torch.Tensor:
    image = torch.zeros(1, 1, 4, 6)
    image[0, 0, 0:2, 2:4] = 1.0  # a lesion filling cell (0, 1)
    return image


def _relevance(model: _OffsetModel, image: torch.Tensor) -> torch.Tensor:
    img, mask, _ = model.forward_image(image, torch.ones(image.shape[0], dtype=torch.bool))
    return model.token_relevance(img, mask, None, None, image_present=None, text_present=None)  # (B, 2, 7)


def test_relevance_read_from_a_neighbour_is_carried_back_to_the_lesion():
    model = _OffsetModel()
    image = _lesion_image()
    rel = _relevance(model, image)
    # uncarried: the lesion's relevance sits on its left neighbour, token (0, 0)
    assert int(rel[0, 0, :6].argmax()) == 0
    out = carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None, reference=torch.zeros(1, 8, 8))
    carried = out[0]  # (C, h, w)
    assert carried.shape == (2, *GRID)
    assert carried[0].flatten().argmax().item() == 1  # cell (0, 1): the lesion
    assert carried[0, 0, 1].item() == pytest.approx(1.0)
    assert carried[1, 0, 1].item() == pytest.approx(-1.0)  # the negative part is carried the same way
    torch.testing.assert_close(carried.sum((1, 2)), rel[0, :, :6].sum(-1))  # each label's sum kept
    assert model.image_calls == 1 + 1 + 6  # the original, the carry's unoccluded baseline, one pass per cell


def test_sub_cell_windows_give_a_finer_map_that_peaks_on_the_lesion():
    model = _OffsetModel()
    image = _lesion_image()
    rel = _relevance(model, image)
    out = carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None, reference=torch.zeros(1, 8, 8),
                                subcells=2)
    carried = out[0, 0]  # (2h, 2w) = (4, 6): one sub-cell per pixel here
    assert carried.shape == (4, 6)
    assert model.image_calls == 1 + 1 + 3 * 5  # windows of one cell moved by half a cell
    r, c = divmod(int(carried.argmax()), 6)
    assert 0 <= r < 2 and 2 <= c < 4  # inside the lesion's pixels
    assert carried[0:2, 2:4].sum() > 0.6 * carried.sum()
    torch.testing.assert_close(out[0].sum((1, 2)), rel[0, :, :6].sum(-1))
    with pytest.raises(ValueError, match="subcells must be >= 1"):
        carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None, reference=torch.zeros(1, 8, 8),
                              subcells=0)


def test_windows_wider_than_a_cell_cover_a_lesion_that_straddles_two_cells():
    model = _OffsetModel()
    image = torch.zeros(1, 1, 4, 6)
    image[0, 0, 0:2, 3:5] = 1.0  # a lesion across cells (0, 1) and (0, 2): tokens (0, 0) and (0, 1) read half each
    rel = _relevance(model, image)
    out = carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None, reference=torch.zeros(1, 8, 8),
                                subcells=2, window=3)  # windows of a cell and a half, moved by half a cell
    assert model.image_calls == 1 + 1 + 2 * 4  # (4 − 3 + 1) × (6 − 3 + 1) windows, and the baseline
    carried = out[0, 0]  # (4, 6)
    r, c = divmod(int(carried.argmax()), 6)
    assert 0 <= r < 2 and 3 <= c < 5  # inside the lesion's pixels
    assert int(carried.sum(0).argmax()) in (3, 4)  # the columns hold most where the lesion is
    torch.testing.assert_close(out[0].sum((1, 2)), rel[0, :, :6].sum(-1))
    with pytest.raises(ValueError, match="window must be 1 … 4 sub-cells"):
        carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None, reference=torch.zeros(1, 8, 8),
                              subcells=2, window=5)


def test_a_token_no_replacement_lowers_keeps_its_relevance_in_place():
    model = _OffsetModel()
    image = _lesion_image()
    rel = _relevance(model, image)
    # the reference equals the image: no replacement changes anything, so nothing moves
    out = carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None,
                                reference=image[0].repeat(1, 1, 1))
    torch.testing.assert_close(out[0], rel[0, :, :6].reshape(2, *GRID))


def test_padding_cells_are_not_replaced_and_the_fill_keeps_the_padding():
    model = _OffsetModel()
    image = torch.zeros(1, 1, 4, 6)
    image[0, 0, :, :2] = -1.0  # letterbox padding in columns 0–1; content in columns 2–5: cells (·, 1), (·, 2)
    box = torch.tensor([[0, 2, 4, 4]])  # (top, left, rows, cols)
    fill = reference_fill(image[0], torch.full((1, 8, 8), 0.25), box[0].tolist())
    assert (fill[0, :, :2] == -1.0).all() and (fill[0, :, 2:] == 0.25).all()
    image[0, 0, :, :2] = 0.0  # (the stand-in reads padding too: keep it neutral for the carry below)
    image[0, 0, 0:2, 4:6] = 1.0  # a lesion in cell (0, 2)
    rel = _relevance(model, image)
    out = carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=box, reference=torch.zeros(1, 8, 8))
    assert model.image_calls == 1 + 1 + 4  # four content cells, not six
    carried = out[0, 0]
    assert carried.flatten().argmax().item() == 2  # cell (0, 2), where token (0, 1) read the lesion from
    torch.testing.assert_close(out[0].sum((1, 2)), rel[0, :, :6].sum(-1))


def test_fewer_orderings_measure_drops_against_their_own_unoccluded_game():
    model = _OffsetModel()
    image = _lesion_image()
    rel = _relevance(model, image)  # as shown: 32 orderings
    exact = carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None, reference=torch.zeros(1, 8, 8),
                                  permutations=32)
    # 8 orderings: every pass off by the same sampling error; it cancels in the drops, the shown values are shared
    cheap = carry_image_relevance(model, _inputs(image), rel, grid=GRID, boxes=None, reference=torch.zeros(1, 8, 8),
                                  permutations=8)
    torch.testing.assert_close(cheap, exact)
    torch.testing.assert_close(cheap[0].sum((1, 2)), rel[0, :, :6].sum(-1))


def test_missing_image_keeps_its_values_and_3d_grid_is_not_carried():
    model = _OffsetModel()
    image = _lesion_image()
    rel = _relevance(model, image)
    out = carry_image_relevance(model, _inputs(image, present=False), rel, grid=GRID, boxes=None,
                                reference=torch.zeros(1, 8, 8))
    torch.testing.assert_close(out[0], rel[0, :, :6].reshape(2, *GRID))
    assert model.image_calls == 1
    assert carry_image_relevance(model, _inputs(image), rel, grid=(1, 2, 3), boxes=None,
                                 reference=torch.zeros(1, 8, 8)) is None


class _Sample:
    def __init__(self, image, labels, box: Letterbox | None):
        self.image, self.labels, self.letterbox = image, labels, box


def test_healthy_reference_is_the_mean_of_healthy_studies_content():
    box = Letterbox.fit((8, 16), 16)  # content rows 4–11 of a 16 × 16 input
    assert (box.pad_top, box.resized) == (4, (8, 16))

    def study(value: float, labels) -> _Sample:
        image = torch.full((1, 16, 16), -5.0)  # padding
        image[:, 4:12] = value
        return _Sample(image, np.asarray(labels, float), box)

    healthy = [study(float(i), [0, 0]) for i in range(MIN_REFERENCE_STUDIES)]
    others = [study(100.0, [1, 0]), study(100.0, [0, np.nan]), _Sample(None, np.zeros(2), None)]
    ref = fit_healthy_reference(others + healthy, size=8)
    assert ref is not None and ref.count == MIN_REFERENCE_STUDIES
    assert ref.image.shape == (1, 8, 8)
    # only the content (never the padding), only the healthy studies
    torch.testing.assert_close(ref.image, torch.full((1, 8, 8), (MIN_REFERENCE_STUDIES - 1) / 2))
    assert fit_healthy_reference(healthy[:-1] + others, size=8) is None  # too few: no patient's image is stored


def test_checkpoint_stores_the_reference_and_predictor_carries_with_the_sum_kept(tiny_checkpoint, tmp_path, caplog):
    from clinmm.checkpoint import load_checkpoint, save_checkpoint
    from clinmm.inference import Predictor

    loaded = load_checkpoint(tiny_checkpoint)  # the demo configuration: carry asked for, no reference fitted
    assert loaded.config.fusion.image_relevance_carry == "occlusion"
    assert int(loaded.model.healthy_reference_count) == 0
    with caplog.at_level("WARNING", logger="clinmm.inference"):
        plain = Predictor(loaded)
    assert not plain.carries_image_relevance and "holds no healthy reference" in caplog.text
    model = copy.deepcopy(loaded.model)
    torch.manual_seed(1)
    model.healthy_reference.copy_(torch.rand(1, 64, 64))
    model.healthy_reference_count.fill_(20)
    out = tmp_path / "carry"
    cfg = copy.deepcopy(loaded.config)
    cfg.fusion.image_relevance_carry_subcells = 1  # windows of one cell, moved by one cell: the token grid itself
    cfg.fusion.image_relevance_carry_window = 1.0
    save_checkpoint(out, model=model, config=cfg, labels=loaded.labels, calibration=loaded.calibration,
                    scope={}, model_card={}, reference={})
    carrying = Predictor.from_path(out, device="cpu")
    assert carrying.carries_image_relevance
    torch.testing.assert_close(carrying.loaded.model.healthy_reference, model.healthy_reference)
    pixels = np.random.default_rng(0).random((1, 24, 64)).astype(np.float32)  # non-square: letterboxed
    vol = ImageVolume(pixels=pixels, display=np.clip(pixels, 0, 1), modality="CR")
    sample = carrying.prepare(vol, "Fever and cough, no dyspnea.", key="s")
    batch = carrying.collate([sample])
    assert batch.boxes.tolist() == [[sample.letterbox.pad_top, sample.letterbox.pad_left, *sample.letterbox.resized]]
    a = carrying.forward(batch, explain=True)
    b = plain.forward(batch, explain=True)
    assert b.image_relevance_map is None
    torch.testing.assert_close(a.logits, b.logits)  # the prediction does not depend on the carry
    torch.testing.assert_close(a.relevance, b.relevance)  # the tokens' own relevance stays as the model gives it
    ni = a.num_image_tokens
    grid = a.image_grid
    carried = a.image_relevance_map[0]  # (C, h, w)
    before = b.relevance[0, :, :ni].reshape(-1, *grid)
    torch.testing.assert_close(carried.sum((1, 2)), before.sum((1, 2)), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(carried, before)
    # the top row of cells is letterbox padding (rows 20–43 of 64 hold the image): padding cells are never replaced,
    # so relevance only leaves them (a token there keeps at most what it had)
    assert sample.letterbox.pad_top >= 64 // grid[0]
    assert (carried[:, 0].abs() <= before[:, 0].abs() + 1e-6).all()
    pred = carrying.predict([sample], explain=True)[0]
    np.testing.assert_allclose(pred.image_relevance, carried.numpy(), atol=1e-6)
    # the image-only relevance the carry asks for is the image part of the whole model's
    m = carrying.loaded.model
    with torch.no_grad():
        img, img_mask, _ = m.forward_image(batch.inputs.image, batch.inputs.image_present)
        txt, txt_mask, _ = m.forward_text(batch.inputs)
        kw = {"image_present": batch.inputs.image_present, "text_present": batch.inputs.text_present}
        whole = m.token_relevance(img, img_mask, txt, txt_mask, **kw)
        part = m.token_relevance(img, img_mask, txt, txt_mask, image_only=True, **kw)
    torch.testing.assert_close(whole, b.relevance)
    torch.testing.assert_close(part, whole[..., :ni])

    # k = 2: a map twice as fine reaches the prediction and the explanation on the original pixel grid
    from clinmm.explain.attention import explain_prediction

    cfg = copy.deepcopy(loaded.config)
    cfg.fusion.image_relevance_carry_subcells = 2
    save_checkpoint(tmp_path / "carry2", model=model, config=cfg, labels=loaded.labels,
                    calibration=loaded.calibration, scope={}, model_card={}, reference={})
    fine = Predictor.from_path(tmp_path / "carry2", device="cpu")
    sample = fine.prepare(vol, "Fever and cough, no dyspnea.", key="s")
    pred = fine.predict([sample], explain=True)[0]
    assert pred.image_relevance.shape == (len(loaded.labels), 2 * grid[0], 2 * grid[1])
    np.testing.assert_allclose(pred.image_relevance.sum((1, 2)), before.sum((1, 2)).numpy(), atol=1e-4, rtol=1e-4)
    heat = explain_prediction(sample, pred).labels[0].image.heat
    assert heat.shape == (24, 64)
