"""Every fusion method × every backbone (2D and 3D): shapes, finite outputs, missing modalities, padding invariance."""

from __future__ import annotations

import pytest
import torch
from clinmm_tiny import LABELS, make_samples, tiny_config

import clinmm.models.classifier as classifier_module
from clinmm.data.dataset import collate
from clinmm.models.classifier import ClinmmModel
from clinmm.models.fusion import FUSION_METHODS
from clinmm.models.image import BACKBONES, ImageEncoder
from clinmm.models.losses import joint_loss
from clinmm.models.text import TextEncoder

LIGHT = [b for b in BACKBONES if b not in ("densenet121", "resnet50")]
GRID = [pytest.param(b, d, marks=pytest.mark.slow if b in ("densenet121", "resnet50") else ()) for b in BACKBONES
        for d in (2, 3)]


@pytest.fixture(scope="module")
def text_encoder(tiny_text_dir) -> TextEncoder:
    cfg = tiny_config(tiny_text_dir)
    return TextEncoder.from_config(cfg.text)


def _models(backbone, dims, text_encoder, tiny_text_dir, monkeypatch):
    """One image encoder per (backbone, dims), shared by a model of every fusion method."""
    cfg = tiny_config(tiny_text_dir, backbone=backbone, spatial_dims=dims)
    torch.manual_seed(0)
    image_encoder = ImageEncoder(config=cfg.image, image_size=32)
    monkeypatch.setattr(classifier_module, "ImageEncoder", lambda **kw: image_encoder)
    out = {}
    for method in FUSION_METHODS:
        c = tiny_config(tiny_text_dir, backbone=backbone, spatial_dims=dims, method=method)
        out[method] = ClinmmModel(config=c, labels=LABELS, text_encoder=text_encoder)
    return out


@pytest.mark.parametrize(("backbone", "dims"), GRID)
def test_every_fusion_shapes_finite_and_missing_flags(backbone, dims, text_encoder, tiny_text_dir, monkeypatch):
    samples = make_samples(text_encoder.note_tokenizer(), 8, seed=dims, spatial_dims=dims)
    samples[0].image = None  # image missing
    samples[1].note = text_encoder.note_tokenizer().encode(None)  # note missing
    samples[2].image = None
    samples[2].note = text_encoder.note_tokenizer().encode(None)  # nothing at all: must not crash
    batch = collate(samples, image_size=32)
    for method, model in _models(backbone, dims, text_encoder, tiny_text_dir, monkeypatch).items():
        model.eval()
        b, c = len(samples), len(LABELS)
        everyone = torch.ones(b, dtype=torch.bool)
        with torch.no_grad():
            out = model(batch.inputs)
            ablations = model.forward_ablations(batch.inputs)  # encoders once, fusion three times
            no_text = model(batch.inputs, drop_text=everyone).logits
            no_image = model(batch.inputs, drop_image=everyone).logits
        for got, ref in ((ablations.logits, out.logits), (ablations.logits_no_text, no_text),
                         (ablations.logits_no_image, no_image)):
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        if method not in ("image_only", "text_only"):
            assert not torch.allclose(no_text, out.logits) and not torch.allclose(no_image, out.logits), method
        assert out.logits.shape == (b, c), method
        assert torch.isfinite(out.logits).all(), method
        assert ((out.probs >= 0) & (out.probs <= 1)).all()
        assert torch.equal(out.image_present, batch.inputs.image_present)
        assert torch.equal(out.text_present, batch.inputs.text_present)
        assert not out.image_present[0] and not out.text_present[1] and not out.image_present[2]
        if out.modality_share is not None:
            assert out.modality_share.shape == (b, c, 2)
            assert torch.isfinite(out.modality_share).all()
        if method == "cross_attention":
            ni = out.num_image_tokens
            assert out.attention.shape[:2] == (b, c) and out.attention.shape[2] == ni + batch.inputs.keep[0].numel()
            assert len(out.image_grid) == dims
            # per-modality softmaxes scaled by the modality share: a label's token attention sums to 1 (0 for a
            # study with neither modality, which only the stand-ins describe)
            total = out.attention.sum(-1)  # (B, C)
            any_present = (batch.inputs.image_present | batch.inputs.text_present).float()[:, None]  # (B, 1)
            torch.testing.assert_close(total, any_present.expand_as(total), atol=1e-5, rtol=0)
            share = out.modality_share
            torch.testing.assert_close(out.attention[:, :, :ni].sum(-1), share[..., 0], atol=1e-5, rtol=0)
            assert out.attention[0, :, :ni].abs().max() == 0  # missing image: no attention on its tokens
            assert out.attention[1, :, ni:].abs().max() == 0  # missing note: none on text tokens
            assert (share[0, :, 0] == 0).all() and (share[1, :, 1] == 0).all()  # a missing modality has no share
            # the stand-in takes the whole softmax of a missing modality and nothing of a present one
            present = torch.stack([batch.inputs.image_present, batch.inputs.text_present], -1)[:, None, :]  # (B,1,2)
            expected = (~present).float().expand_as(out.missing_attention)
            torch.testing.assert_close(out.missing_attention, expected, atol=1e-6, rtol=0)
        if dims == 2:  # one training step's gradients are finite too
            model.train()
            loss = joint_loss(model(batch.inputs), batch.labels, fusion=model.config.fusion, train=model.config.train)
            loss.backward()
            assert torch.isfinite(loss)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads), method
            model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("method", FUSION_METHODS)
def test_padding_invariance(method, text_encoder, tiny_text_dir):
    """A study's logits do not depend on what it is batched with (longer notes → more chunks and longer chunks)."""
    torch.manual_seed(0)
    cfg = tiny_config(tiny_text_dir, method=method)
    model = ClinmmModel(config=cfg, labels=LABELS, text_encoder=text_encoder).eval()
    tok = text_encoder.note_tokenizer()
    samples = make_samples(tok, 6, seed=3, missing=False, long_note_every=0)
    long = make_samples(tok, 1, seed=4, missing=False, long_note_every=1)[0]
    assert long.note.num_chunks > max(s.note.num_chunks for s in samples)
    with torch.no_grad():
        alone = torch.cat([model(collate([s], image_size=32).inputs).logits for s in samples])
        padded = model(collate(samples + [long], image_size=32).inputs).logits[: len(samples)]
    assert torch.allclose(alone, padded, atol=1e-5), (alone - padded).abs().max()


def test_modality_dropout_flags_and_standin(text_encoder, tiny_text_dir):
    """Dropping a modality equals the study arriving without it (the learned stand-in token takes its place)."""
    torch.manual_seed(0)
    model = ClinmmModel(config=tiny_config(tiny_text_dir), labels=LABELS, text_encoder=text_encoder).eval()
    tok = text_encoder.note_tokenizer()
    s = make_samples(tok, 1, seed=5, missing=False)[0]
    full = collate([s], image_size=32).inputs
    with torch.no_grad():
        dropped = model(full, drop_text=torch.tensor([True]))
        s.note = tok.encode(None)
        without = model(collate([s], image_size=32).inputs)
    assert not dropped.text_present[0]
    assert torch.allclose(dropped.logits, without.logits, atol=1e-5)


def test_text_token_dropout_hides_tokens_in_training_only(text_encoder, tiny_text_dir):
    """Word dropout at the fusion input: about p of the valid note tokens are hidden while training, every note keeps
    at least one token, padding stays hidden, and evaluation sees every token."""
    torch.manual_seed(0)
    cfg = tiny_config(tiny_text_dir)
    cfg.fusion.text_token_dropout = 0.5
    model = ClinmmModel(config=cfg, labels=LABELS, text_encoder=text_encoder)
    tok = text_encoder.note_tokenizer()
    inputs = collate(make_samples(tok, 8, seed=6, missing=False), image_size=32).inputs
    model.eval()
    with torch.no_grad():
        _, full, _ = model.forward_text(inputs)
    model.train()
    with torch.no_grad():
        _, dropped, _ = model.forward_text(inputs)
    assert not (dropped & ~full).any()  # nothing hidden becomes visible (padding stays masked)
    assert dropped.any(1).all()
    frac = dropped.sum() / full.sum()
    assert 0.3 < float(frac) < 0.7, frac
    single = torch.zeros(2, 5, dtype=torch.bool)
    single[0, 0] = True  # a one-token note, and a missing note
    for _ in range(20):
        kept = ClinmmModel._drop_tokens(single, 0.99)
        assert kept[0, 0] and not kept[1].any()


def test_image_token_dropout_hides_tokens_in_training_only(text_encoder, tiny_text_dir):
    """Image token dropout: about p of an image's tokens are hidden from the fusion and the auxiliary image head while
    training, a missing image stays hidden, and evaluation sees every token."""
    torch.manual_seed(0)
    cfg = tiny_config(tiny_text_dir)
    cfg.fusion.image_token_dropout = 0.5
    model = ClinmmModel(config=cfg, labels=LABELS, text_encoder=text_encoder)
    present = torch.tensor([True] * 7 + [False])
    image = torch.randn(8, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        _, full, _ = model.forward_image(image, present)
    model.train()
    with torch.no_grad():
        _, dropped, _ = model.forward_image(image, present)
    assert full[:7].all() and not full[7].any()
    assert not (dropped & ~full).any() and dropped[:7].any(1).all()
    frac = dropped.sum() / full.sum()
    assert 0.2 < float(frac) < 0.8, frac


def test_explain_returns_the_model_without_each_modality(text_encoder, tiny_text_dir):
    """``explain=True`` also gives the fused logits with the image / the note removed: exactly what the model says when
    that modality is dropped (the dashboard's "without image / without note" columns)."""
    torch.manual_seed(0)
    model = ClinmmModel(config=tiny_config(tiny_text_dir), labels=LABELS, text_encoder=text_encoder).eval()
    tok = text_encoder.note_tokenizer()
    inputs = collate(make_samples(tok, 4, seed=6, missing=False), image_size=32).inputs
    every = torch.ones(4, dtype=torch.bool)
    with torch.no_grad():
        out = model(inputs, explain=True)
        plain = model(inputs)
        no_image = model(inputs, drop_image=every)
        no_text = model(inputs, drop_text=every)
    torch.testing.assert_close(out.logits, plain.logits)
    torch.testing.assert_close(out.logits_no_image, no_image.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits_no_text, no_text.logits, atol=1e-5, rtol=1e-5)
    assert out.relevance is not None and plain.relevance is None and plain.logits_no_image is None
    # the checkpoint's configured games reach the fusion: here the image's "replace", the note's default "visible"
    model.config.fusion.image_relevance_game = "replace"
    with torch.no_grad():
        configured = model(inputs, explain=True).relevance
    ni = out.num_image_tokens
    assert not torch.allclose(configured[..., :ni], out.relevance[..., :ni], atol=1e-4)
    torch.testing.assert_close(configured[..., ni:], out.relevance[..., ni:], atol=1e-6, rtol=0)


def _enumerated_shapley(j, players, value):
    """Player ``j``'s exact Shapley value over ``players`` for the coalition value function ``value(tuple)``."""
    from itertools import combinations
    from math import factorial

    n = len(players)
    others = [p for p in players if p != j]
    total = 0.0
    for size in range(n):
        weight = factorial(size) * factorial(n - size - 1) / factorial(n)
        for subset in combinations(others, size):
            total = total + weight * (value(subset + (j,)) - value(subset))
    return total


def _brute_force_shapley(fusion, img, img_mask, txt, txt_mask):
    """Exact Shapley values by enumerating subsets, independent of the module's formula: the value of a coalition S
    of one modality's tokens is the fused logit when the attention sees only S (key mask; the empty set is the
    modality missing), the other modality as given."""
    b, ni, lt = img.shape[0], img.shape[1], txt.shape[1]
    rel = torch.zeros(b, fusion.queries.shape[0], ni + lt)
    with torch.no_grad():
        for bi in range(b):
            for m, (mask, offset) in enumerate(((img_mask, 0), (txt_mask, ni))):
                players = torch.nonzero(mask[bi]).flatten().tolist()

                def value(subset, m=m, mask=mask):
                    sub = torch.zeros_like(mask[bi : bi + 1])
                    sub[0, list(subset)] = True
                    args = ([img[bi : bi + 1], sub, txt[bi : bi + 1], txt_mask[bi : bi + 1]] if m == 0 else
                            [img[bi : bi + 1], img_mask[bi : bi + 1], txt[bi : bi + 1], sub])
                    return fusion(*args).logits[0]

                for j in players:
                    rel[bi, :, offset + j] = _enumerated_shapley(j, players, value)
    return rel


def _sharpen(fusion):
    """A confident, saturating head and sharp attention, as a trained model's."""
    with torch.no_grad():
        fusion.head_weight.mul_(50.0)
        fusion.queries.mul_(30.0)
        if fusion.separate_note_attention:
            fusion.note_queries.mul_(30.0)


@pytest.mark.parametrize("separate,pool,image_pool", [(False, False, False), (True, False, False),
                                                      (True, True, False), (False, False, True), (True, True, True)])
def test_cross_attention_relevance_is_the_exact_shapley_value_of_the_visible_tokens(separate, pool, image_pool):
    from clinmm.models.fusion import CrossAttentionFusion

    torch.manual_seed(0)
    fusion = CrossAttentionFusion(num_labels=3, dim=32, heads=4, dropout=0.0, separate_note_attention=separate,
                                  note_pool=pool, image_pool=image_pool).eval()
    _sharpen(fusion)
    b, ni, lt = 4, 4, 5
    img, txt = torch.randn(b, ni, 32), torch.randn(b, lt, 32)
    img_mask = torch.ones(b, ni, dtype=torch.bool)
    txt_mask = torch.ones(b, lt, dtype=torch.bool)
    txt_mask[:, 4] = False  # at most 4! = 24 orderings: the module enumerates them all, so the values are exact
    txt_mask[1, 2:] = False  # padding
    img_mask[2] = False  # image missing
    txt_mask[3, 1:] = False  # a one-token note
    with torch.no_grad():
        out = fusion(img, img_mask, txt, txt_mask, relevance=True, image_game="visible", text_game="visible")
    assert out.relevance.shape == (b, 3, ni + lt)
    expected = _brute_force_shapley(fusion, img, img_mask, txt, txt_mask)
    torch.testing.assert_close(out.relevance, expected, atol=2e-4, rtol=1e-4)
    assert torch.all(out.relevance[1, :, ni + 2 :] == 0)  # padding carries nothing
    assert torch.all(out.relevance[2, :, :ni] == 0)  # a missing image carries nothing
    assert out.relevance[3, :, ni].abs().sum() > 0  # the lone note token does
    # the same logits with and without relevance
    torch.testing.assert_close(out.logits, fusion(img, img_mask, txt, txt_mask).logits)


@pytest.mark.parametrize("game,pool", [("replace", False), ("visible", False), ("replace", True), ("visible", True)])
def test_sampled_relevance_adds_up_to_the_logit_minus_the_modality_missing(game, pool):
    """With more tokens than orderings the values are sampled, but every ordering telescopes, so each modality's values
    still add up to the logit minus the logit without that modality; and they are reproducible."""
    from clinmm.models.fusion import CrossAttentionFusion

    torch.manual_seed(4)
    fusion = CrossAttentionFusion(num_labels=2, dim=32, heads=4, dropout=0.0, separate_note_attention=pool,
                                  note_pool=pool, image_pool=pool).eval()
    with torch.no_grad():
        fusion.head_weight.mul_(50.0)
    b, ni, lt = 2, 16, 40
    img, txt = torch.randn(b, ni, 32), torch.randn(b, lt, 32)
    img_mask, txt_mask = torch.ones(b, ni, dtype=torch.bool), torch.ones(b, lt, dtype=torch.bool)
    txt_mask[1, 25:] = False
    with torch.no_grad():
        out = fusion(img, img_mask, txt, txt_mask, relevance=True, image_game=game, text_game=game)
        again = fusion(img, img_mask, txt, txt_mask, relevance=True, image_game=game, text_game=game)
        no_img = fusion(img, torch.zeros_like(img_mask), txt, txt_mask).logits
        no_txt = fusion(img, img_mask, txt, torch.zeros_like(txt_mask)).logits
    torch.testing.assert_close(out.relevance[..., :ni].sum(-1), out.logits - no_img, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(out.relevance[..., ni:].sum(-1), out.logits - no_txt, atol=1e-3, rtol=1e-4)
    assert torch.equal(out.relevance, again.relevance)
    assert torch.all(out.relevance[1, :, ni + 25 :] == 0)
    with torch.no_grad():  # a study's values do not depend on the batch it is scored in
        alone = fusion(img[1:], img_mask[1:], txt[1:, :25], txt_mask[1:, :25], relevance=True, image_game=game,
                       text_game=game)
    torch.testing.assert_close(alone.relevance[0], out.relevance[1, :, : ni + 25], atol=1e-5, rtol=1e-5)


def _brute_force_shapley_replace(fusion, img, img_mask, txt, txt_mask):
    """Exact Shapley values of the "replace" game by enumerating subsets, from ``nn.MultiheadAttention`` itself: the
    attention weights are the full input's (keys unchanged), and a token outside the coalition passes the stand-in's
    value instead of its own (the value input replaced); the other modality's output as given."""
    b, ni, lt = img.shape[0], img.shape[1], txt.shape[1]
    c = fusion.queries.shape[0]
    rel = torch.zeros(b, c, ni + lt)
    with torch.no_grad():
        for bi in range(b):
            q = fusion.queries.unsqueeze(0)  # (1, C, D)
            parts = []
            for m, (tok, mask) in enumerate(((img, img_mask), (txt, txt_mask))):
                stand = fusion.missing[m : m + 1].unsqueeze(0)  # (1, 1, D)
                keys = fusion.keys(m, tok[bi : bi + 1], stand)
                present = bool(mask[bi].any())
                valid = torch.cat([mask[bi : bi + 1], torch.tensor([[not present]])], dim=1)
                parts.append((keys, valid, tok[bi : bi + 1], mask[bi : bi + 1]))

            def output(m, subset):
                keys, valid, tok, mask = parts[m]
                vals = keys.clone()
                n = keys.shape[1] - 1
                out_of_set = [k for k in range(n) if k not in subset]
                vals[0, out_of_set] = keys[0, n]  # the stand-in's value in place of an absent token's
                read_q, _, attn = fusion.reader(m)  # the attention that reads modality m
                out = attn(read_q.unsqueeze(0), keys, vals, key_padding_mask=~valid, need_weights=False)[0]
                pool = fusion.image_pool if m == 0 else fusion.note_pool
                if pool is not None:  # the pooled reading of the coalition's tokens only
                    in_set = mask.clone()
                    in_set[0, out_of_set] = False
                    out = out + pool(tok, in_set)[:, None, :]
                return out

            full = [output(0, range(ni)), output(1, range(lt))]
            for m, (mask, offset) in enumerate(((img_mask, 0), (txt_mask, ni))):
                players = torch.nonzero(mask[bi]).flatten().tolist()

                def value(subset, m=m):
                    own = output(m, subset)
                    return (fusion._head(q, own, full[1]) if m == 0 else fusion._head(q, full[0], own))[0]

                for j in players:
                    rel[bi, :, offset + j] = _enumerated_shapley(j, players, value)
    return rel


@pytest.mark.parametrize("separate,pool", [(False, False), (True, False), (True, True)])
def test_replace_game_relevance_is_its_exact_shapley_value(separate, pool):
    """The "replace" game: the attention weights stay the full input's and an absent token shows the stand-in's value;
    checked against enumeration through ``nn.MultiheadAttention`` with the value input replaced."""
    from clinmm.models.fusion import CrossAttentionFusion

    torch.manual_seed(1)
    fusion = CrossAttentionFusion(num_labels=3, dim=32, heads=4, dropout=0.0, separate_note_attention=separate,
                                  note_pool=pool, image_pool=pool).eval()
    _sharpen(fusion)
    b, ni, lt = 4, 4, 4
    img, txt = torch.randn(b, ni, 32), torch.randn(b, lt, 32)
    img_mask, txt_mask = torch.ones(b, ni, dtype=torch.bool), torch.ones(b, lt, dtype=torch.bool)
    txt_mask[1, 2:] = False
    img_mask[2] = False
    txt_mask[3, 1:] = False
    with torch.no_grad():
        out = fusion(img, img_mask, txt, txt_mask, relevance=True, image_game="replace", text_game="replace")
        no_img = fusion(img, torch.zeros_like(img_mask), txt, txt_mask).logits
        visible = fusion(img, img_mask, txt, txt_mask, relevance=True).relevance  # the default game
    expected = _brute_force_shapley_replace(fusion, img, img_mask, txt, txt_mask)
    torch.testing.assert_close(out.relevance, expected, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out.relevance[..., :ni].sum(-1), out.logits - no_img, atol=1e-4, rtol=1e-4)
    assert torch.all(out.relevance[1, :, ni + 2 :] == 0) and torch.all(out.relevance[2, :, :ni] == 0)
    assert not torch.allclose(out.relevance, visible, atol=1e-2)  # a different game: not the same values
    with torch.no_grad():  # each modality's game is chosen on its own: image "replace" beside note "visible"
        mixed = fusion(img, img_mask, txt, txt_mask, relevance=True, image_game="replace").relevance
    torch.testing.assert_close(mixed[..., :ni], out.relevance[..., :ni], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[..., ni:], visible[..., ni:], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="game"):
        fusion(img, img_mask, txt, txt_mask, relevance=True, image_game="hidden")
