"""The head stack (late fusion of the fusion head and the auxiliary heads): identity until fitted, one set of weights
per presence pattern, its relevance still the Shapley value that adds up to the logit minus the modality missing,
fitted on validation by the training run and saved with the weights."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

from clinmm.data.dataset import collate
from clinmm.models.classifier import ClinmmModel
from clinmm.models.fusion import MeanMaxPool
from clinmm.models.head_stack import PATTERNS, HeadStack, pooled_head_relevance, presence_pattern
from clinmm.models.text import TextEncoder
from clinmm.training.stacking import fit_head_stack


@pytest.fixture(scope="module")
def text_encoder(tiny_text_dir) -> TextEncoder:
    return TextEncoder.from_config(tiny_config(tiny_text_dir).text)


def _model(tiny_text_dir, text_encoder, method="cross_attention", seed=0) -> ClinmmModel:
    cfg = tiny_config(tiny_text_dir, method=method)
    cfg.fusion.head_stack = True
    torch.manual_seed(seed)
    return ClinmmModel(config=cfg, labels=LABELS, text_encoder=text_encoder).eval()


def _randomise(stack: HeadStack, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    stack.weight.copy_(torch.randn(stack.weight.shape, generator=gen))
    stack.bias.copy_(torch.randn(stack.bias.shape, generator=gen))


def test_presence_patterns_index_both_no_image_no_text_neither():
    image = torch.tensor([True, False, True, False])
    text = torch.tensor([True, True, False, False])
    assert [PATTERNS[i] for i in presence_pattern(image, text)] == ["both", "no_image", "no_text", "neither"]


def test_an_unfitted_stack_is_the_fusion_head(tiny_text_dir, text_encoder):
    """Identity until fitted: the same logits as the model without a stack, and as its own fusion head."""
    model = _model(tiny_text_dir, text_encoder)
    cfg = tiny_config(tiny_text_dir)
    torch.manual_seed(0)
    plain = ClinmmModel(config=cfg, labels=LABELS, text_encoder=text_encoder).eval()
    inputs = collate(make_samples(text_encoder.note_tokenizer(), 8, seed=3), image_size=32).inputs
    with torch.no_grad():
        out, ref = model(inputs), plain(inputs)
    assert not bool(model.head_stack.fitted)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.logits, out.head_logits)


@pytest.mark.parametrize("method", ["cross_attention", "concat", "image_only", "text_only"])
def test_stack_combines_the_heads_with_the_weights_of_each_presence_pattern(tiny_text_dir, text_encoder, method):
    """The output is w·(fusion head, image head, text head) + b with the weights of the study's pattern; removing a
    modality (forward's drop flags, forward_ablations, explain's "without" logits) switches to that pattern."""
    model = _model(tiny_text_dir, text_encoder, method=method)
    _randomise(model.head_stack)
    inputs = collate(make_samples(text_encoder.note_tokenizer(), 14, seed=4), image_size=32).inputs
    n = inputs.image_present.shape[0]
    every = torch.ones(n, dtype=torch.bool)
    with torch.no_grad():
        out = model(inputs, explain=True)
        no_image = model(inputs, drop_image=every)
        no_text = model(inputs, drop_text=every)
        ablations = model.forward_ablations(inputs)
    for o in (out, no_image, no_text):
        pattern = presence_pattern(o.image_present, o.text_present)  # (B,)
        w, b = model.head_stack.weight[pattern], model.head_stack.bias[pattern]  # (B, C, 3), (B, C)
        expected = w[..., 0] * o.head_logits + b
        if o.image_logits is not None:
            expected = expected + w[..., 1] * o.image_logits
        if o.text_logits is not None:
            expected = expected + w[..., 2] * o.text_logits
        torch.testing.assert_close(o.logits, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(no_image.logits, out.logits, atol=1e-3)  # another pattern, other weights
    torch.testing.assert_close(ablations.logits, out.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ablations.logits_no_image, no_image.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ablations.logits_no_text, no_text.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits_no_image, no_image.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits_no_text, no_text.logits, atol=1e-5, rtol=1e-5)


def test_pooled_head_relevance_is_the_exact_shapley_value():
    """Few tokens: every ordering, so the values equal a brute-force Shapley value of the pooled head's logit."""
    torch.manual_seed(0)
    pool, head = MeanMaxPool(dim=6), torch.nn.Linear(6, 3)
    tokens = torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, True, False], [True, False, True, False, False]])
    got = pooled_head_relevance(pool, head, tokens, mask)

    def value(i, subset):
        m = torch.zeros(1, 5, dtype=torch.bool)
        m[0, list(subset)] = True
        return head(pool(tokens[i : i + 1], m))[0].double()

    for i in range(2):
        players = torch.nonzero(mask[i]).flatten().tolist()
        n = len(players)
        for j in players:
            others = [p for p in players if p != j]
            phi = torch.zeros(3, dtype=torch.float64)
            for r in range(n):
                for s in itertools.combinations(others, r):
                    weight = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
                    phi += weight * (value(i, s + (j,)) - value(i, s))
            torch.testing.assert_close(got[i, :, j].double(), phi.detach(), atol=1e-5, rtol=1e-5)
    assert torch.all(got[0, :, 4] == 0) and torch.all(got[1, :, 3:] == 0)


def test_stacked_relevance_adds_up_to_the_logit_minus_each_modality_missing(tiny_text_dir, text_encoder):
    """With a fitted (here random) stack the token relevance is still each token's Shapley value of the model's own
    output: a modality's values add up to the logit minus the logit with that modality removed, which the stack
    scores with the missing pattern's weights."""
    model = _model(tiny_text_dir, text_encoder)
    _randomise(model.head_stack)
    inputs = collate(make_samples(text_encoder.note_tokenizer(), 14, seed=5), image_size=32).inputs
    with torch.no_grad():
        out = model(inputs, explain=True)
    ni = out.num_image_tokens
    torch.testing.assert_close(out.relevance[..., :ni].sum(-1), out.logits - out.logits_no_image, atol=1e-3,
                               rtol=1e-4)
    torch.testing.assert_close(out.relevance[..., ni:].sum(-1), out.logits - out.logits_no_text, atol=1e-3,
                               rtol=1e-4)
    img_missing = ~out.image_present
    assert img_missing.any() and torch.all(out.relevance[img_missing][..., :ni] == 0)


def test_training_fits_the_stack_on_validation_and_the_checkpoint_keeps_it(tmp_path, tiny_text_dir, text_encoder):
    """fit_head_stack sets per-pattern weights (no longer the identity) that improve the in-sample log loss, and a
    saved and reloaded model gives the same logits."""
    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import load_checkpoint, save_checkpoint

    model = _model(tiny_text_dir, text_encoder)
    tok = text_encoder.note_tokenizer()
    val = make_samples(tok, 80, seed=8)
    fit = fit_head_stack(model, val, image_size=32, pad_id=tok.pad_id, device=torch.device("cpu"),
                         min_per_class=3)
    assert bool(model.head_stack.fitted)
    assert set(fit.coefficients) == {"both", "no_image", "no_text"}
    w = model.head_stack.weight
    assert not torch.equal(w[:3, :, 1:], torch.zeros_like(w[:3, :, 1:]))  # the auxiliary heads are used
    assert torch.all(w[1, :, 1] == 0) and torch.all(w[2, :, 2] == 0)  # never a missing modality's head
    assert torch.equal(w[3, :, 0], torch.ones_like(w[3, :, 0]))  # neither modality: the fusion head
    for label, coef in fit.coefficients["both"].items():
        assert coef is not None and coef["n"] > 0, label
    save_checkpoint(tmp_path / "ck", model=model, config=model.config, labels=LABELS,
                    calibration=[LabelCalibration()] * len(LABELS), scope={"modalities": ["DX"]},
                    model_card={"name": "t"}, reference={})
    loaded = load_checkpoint(tmp_path / "ck")
    inputs = collate(val[:10], image_size=32, pad_id=tok.pad_id).inputs
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(inputs).logits, model(inputs).logits, atol=1e-6, rtol=0)
    assert bool(loaded.model.head_stack.fitted)
    assert np.isfinite(loaded.model.head_stack.weight.numpy()).all()


def test_one_branch_wrappers_score_the_stacked_output(tiny_text_dir, text_encoder):
    """Grad-CAM, integrated gradients and the deletion curves re-run one branch through ``explain._forward``; with a
    head stack they must follow the same output the dashboard shows."""
    from clinmm.explain._forward import ImageToLogits, TextToLogits

    model = _model(tiny_text_dir, text_encoder)
    _randomise(model.head_stack)
    samples = make_samples(text_encoder.note_tokenizer(), 4, seed=9, missing=False)
    for s in samples:
        inputs = collate([s], image_size=32).inputs
        with torch.no_grad():
            want = model(inputs).logits
            by_image = ImageToLogits(model=model, inputs=inputs)(inputs.image)
            by_text = TextToLogits(model=model, inputs=inputs)(inputs.input_ids, inputs.attention_mask, inputs.keep)
        torch.testing.assert_close(by_image, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(by_text, want, atol=1e-5, rtol=1e-5)


def test_nonnegative_logistic_matches_sklearn_when_unconstrained_and_clips_a_contrary_head():
    """Where every weight of the unconstrained optimum is positive the fit is sklearn's (same penalty); a feature that
    points the other way gets weight 0, not a negative one."""
    from sklearn.linear_model import LogisticRegression

    from clinmm.training.stacking import fit_nonnegative_logistic

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    x = np.stack([y * 1.5 + rng.normal(size=400), y * 0.8 + rng.normal(size=400)], axis=1)
    w, b = fit_nonnegative_logistic(x, y, regularisation=1.0)
    ref = LogisticRegression(C=1.0, tol=1e-8, max_iter=1000).fit(x, y)
    assert np.all(ref.coef_[0] > 0)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-3)
    assert abs(b - ref.intercept_[0]) < 1e-3
    contrary = np.stack([x[:, 0], -y + rng.normal(size=400)], axis=1)
    w2, _ = fit_nonnegative_logistic(contrary, y)
    assert w2[0] > 0.5 and w2[1] == 0.0


def test_stacked_modality_share_is_what_each_modality_adds_to_the_output(tiny_text_dir, text_encoder):
    """With a stack the fusion's attention share no longer describes the output: the share is what each modality
    adds to the logit (its removal's effect, signed) over the sum of magnitudes (explain only); a missing modality
    adds nothing."""
    model = _model(tiny_text_dir, text_encoder)
    _randomise(model.head_stack)
    inputs = collate(make_samples(text_encoder.note_tokenizer(), 14, seed=7), image_size=32).inputs
    with torch.no_grad():
        out = model(inputs, explain=True)
        plain = model(inputs)
    assert plain.modality_share is None
    added = torch.stack([out.logits - out.logits_no_image, out.logits - out.logits_no_text], -1)
    torch.testing.assert_close(out.modality_share, added / added.abs().sum(-1, keepdim=True), atol=1e-5, rtol=1e-5)
    assert (out.modality_share < 0).any() and (out.modality_share > 0).any()
    assert torch.all(out.modality_share[~out.image_present][..., 0] == 0)
    assert torch.all(out.modality_share[~out.text_present][..., 1] == 0)
