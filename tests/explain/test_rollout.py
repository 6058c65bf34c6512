"""Rolling the note tokens' relevance back through the text encoder's self-attention (clinmm.explain.rollout).

Hand-built attentions with known answers: the order of the layers, the residual weight, the overlap between chunks
and the special tokens; then the whole path on a real (untrained) checkpoint: a prediction's note relevance is the
fusion's relevance rolled back through the encoder attention of the same forward pass, in ``Predictor`` and in the
batch-scoring path alike.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinmm.explain.rollout import roll_back_relevance
from clinmm.io.study import ImageVolume


def _one_hot_rows(length: int, moves: dict[int, int]) -> torch.Tensor:
    """(1, 1, L, L) attention: every token attends to itself, except ``moves`` (query → key)."""
    a = torch.eye(length)
    for q, k in moves.items():
        a[q] = 0.0
        a[q, k] = 1.0
    return a[None, None]


def _chunk(length: int = 5):
    am = torch.ones(1, length, dtype=torch.long)
    keep = torch.ones(1, length, dtype=torch.bool)
    keep[0, 0] = keep[0, -1] = False  # no special token kept (the tokenizer keeps the first window's [CLS]; below)
    offsets = torch.tensor([[[0, 0]] + [[3 * i, 3 * i + 2] for i in range(length - 2)] + [[0, 0]]])
    return am, keep, offsets


def test_mix_zero_is_the_identity_and_bad_mix_is_refused():
    am, keep, offsets = _chunk()
    rel = torch.tensor([[0.0, 0.5, -0.2, 0.1, 0.0]])
    att = [_one_hot_rows(5, {1: 2})]
    assert torch.equal(roll_back_relevance(rel, att, attention_mask=am, keep=keep, offsets=offsets, mix=0.0), rel)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="mix"):
            roll_back_relevance(rel, att, attention_mask=am, keep=keep, offsets=offsets, mix=bad)
    with pytest.raises(ValueError, match="do not match"):
        roll_back_relevance(rel[:, :4], att, attention_mask=am, keep=keep, offsets=offsets, mix=0.25)


def test_relevance_moves_to_the_token_a_state_read_in_layer_order():
    """Layer 1: token 2 reads token 3; layer 2: token 1 reads token 2. The state at token 1 carries token 3 too."""
    am, keep, offsets = _chunk()
    rel = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]])  # the fusion credits token 1's contextual state
    att = [_one_hot_rows(5, {2: 3}), _one_hot_rows(5, {1: 2})]
    out = roll_back_relevance(rel, att, attention_mask=am, keep=keep, offsets=offsets, mix=0.5)
    # r · Â2 = .5 e1 + .5 e2; then · Â1: e1 stays, e2 → .5 e2 + .5 e3
    assert torch.allclose(out, torch.tensor([[0.0, 0.5, 0.25, 0.25, 0.0]]))
    swapped = roll_back_relevance(rel, att[::-1], attention_mask=am, keep=keep, offsets=offsets, mix=0.5)
    assert torch.allclose(swapped, torch.tensor([[0.0, 0.5, 0.5, 0.0, 0.0]]))  # order matters: the test can fail


def test_sum_is_kept_except_what_reaches_special_tokens():
    am, keep, offsets = _chunk()
    rel = torch.tensor([[0.0, 0.3, -0.1, 0.4, 0.0], [0.0, -0.2, 0.6, 0.1, 0.0]])
    g = torch.Generator().manual_seed(0)
    att = [torch.softmax(torch.randn(1, 2, 5, 5, generator=g), -1)[None, 0] for _ in range(3)]  # (1, H, L, L)
    out = roll_back_relevance(rel, att, attention_mask=am, keep=keep, offsets=offsets, mix=0.25)
    m = torch.eye(5)
    for a in att:
        m = (0.25 * a[0].mean(0) + 0.75 * torch.eye(5)) @ m
    full = rel @ m  # every token, specials included
    assert torch.allclose(out[:, 1:4], full[:, 1:4], atol=1e-6)
    assert torch.all(out[:, [0, 4]] == 0)
    assert torch.allclose(out.sum(1) + full[:, [0, 4]].sum(1), rel.sum(1), atol=1e-6)


def test_with_the_first_cls_kept_the_sum_is_kept_exactly():
    """As the tokenizer marks it: the first window's [CLS] is read by fusion and collects what reaches any special."""
    am, keep, offsets = _chunk()
    keep[0, 0] = True
    rel = torch.tensor([[0.0, 0.3, -0.1, 0.4, 0.0], [0.0, -0.2, 0.6, 0.1, 0.0]])
    att = [_one_hot_rows(5, {1: 4, 3: 0})]  # two tokens read [SEP] and [CLS]
    out = roll_back_relevance(rel, att, attention_mask=am, keep=keep, offsets=offsets, mix=0.5)
    assert torch.allclose(out.sum(1), rel.sum(1), atol=1e-6)
    assert torch.allclose(out[:, 0], 0.5 * (rel[:, 1] + rel[:, 3]))  # [SEP]'s share and [CLS]'s own, on [CLS]
    assert torch.all(out[:, 4] == 0)


def test_a_copy_fusion_does_not_read_hands_its_relevance_to_the_kept_copy():
    """Two windows share the word at span (6, 8); fusion reads the copy in window 1."""
    am = torch.ones(2, 4, dtype=torch.long)
    offsets = torch.tensor([[[0, 0], [0, 5], [6, 8], [0, 0]], [[0, 0], [6, 8], [9, 12], [0, 0]]])
    keep = torch.tensor([[False, True, False, False], [False, True, True, False]])
    rel = torch.zeros(1, 8)
    rel[0, 1] = 1.0  # window 0's "[0, 5)" token, whose state read window 0's copy of "[6, 8)"
    att = [torch.stack([_one_hot_rows(4, {1: 2})[0], _one_hot_rows(4, {})[0]])]  # (K=2, H=1, L, L)
    out = roll_back_relevance(rel, att, attention_mask=am, keep=keep, offsets=offsets, mix=0.5)
    expected = torch.zeros(1, 8)
    expected[0, 1] = 0.5  # kept in place
    expected[0, 5] = 0.5  # window 0's copy of "[6, 8)" → window 1's kept copy
    assert torch.allclose(out, expected)


@pytest.fixture(scope="module")
def study(tiny_predictor):
    rng = np.random.default_rng(3)
    pixels = rng.random((1, 64, 64)).astype(np.float32)
    vol = ImageVolume(pixels=pixels, display=np.clip(pixels, 0, 1), modality="CR")
    note = ("Febrile to 39.2 overnight with rigors. No cough. Shortness of breath on stairs for two weeks. "
            "Lives alone. Chest radiograph requested.")
    return tiny_predictor.prepare(vol, note)


def test_prediction_relevance_is_the_fusion_relevance_rolled_back(tiny_predictor, study):
    predictor = tiny_predictor
    assert predictor.text_rollout == 0.25  # the default
    batch = predictor.collate([study])
    assert batch.inputs.input_ids.shape[1] > 1  # several overlapping windows: the merge is exercised
    pred = predictor.predict([study], explain=True)[0]
    with torch.inference_mode():
        out = predictor.loaded.model(batch.inputs, explain=True, output_text_attentions=True)
    ni = out.num_image_tokens
    keep = batch.inputs.keep[0].flatten()
    expected = roll_back_relevance(out.relevance[0, :, ni:].float(), [a[0] for a in out.text_attentions],
                                   attention_mask=batch.inputs.attention_mask[0], keep=batch.inputs.keep[0],
                                   offsets=batch.offsets[0], mix=0.25)[:, keep]  # (C, T)
    assert pred.text_relevance.shape == tuple(expected.shape)
    np.testing.assert_allclose(pred.text_relevance, expected.numpy(), atol=1e-6)
    unrolled = out.relevance[0, :, ni:][:, keep].float().numpy()
    assert not np.allclose(pred.text_relevance, unrolled, atol=1e-4)  # the rollout did something
    np.testing.assert_allclose(pred.image_relevance.reshape(len(predictor.labels), -1),
                               out.relevance[0, :, :ni].float().numpy(), atol=1e-6)  # the image part is untouched


def test_batch_scoring_path_gives_the_same_relevance(tiny_predictor, study):
    from clinmm.scoring.pipeline import predict_batches

    class _Decoded:  # what predict_batches reads of a decoded study
        def __init__(self, sample):
            self.sample = sample

    single = tiny_predictor.predict([study], explain=True)[0]
    batched = predict_batches(tiny_predictor, [[_Decoded(study)]], explain=True)[0][0]
    np.testing.assert_allclose(batched.text_relevance, single.text_relevance, atol=1e-6)
