"""Long-note acceptance: an evidence phrase at the end of a note 5× longer than max_length is found.

A small text-only classifier (label-query attention over MiniLM tokens, default ``tokens`` pooling) is trained for a few
steps on synthetic sentences; then a note of > 5 × max_length tokens with the phrase at its very end must score within
0.05 of the phrase alone, and the attention peak (stitched back to characters) must lie inside the phrase's span.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clinmm.config import TextEncoderConfig  # noqa: E402
from clinmm.models.text import TextEncoder  # noqa: E402
from clinmm.text.chunking import stitch_token_scores, word_scores  # noqa: E402
from clinmm.text.classifier import (  # noqa: E402
    TextClassifier,
    cache_frozen_states,
    encode_notes,
    fit_text_classifier,
    predict_proba,
)
from clinmm.text.tokenize import collate_notes  # noqa: E402

MAX_LENGTH = 32
PHRASES = ["large right pleural effusion", "moderate left pleural effusion", "small bilateral pleural effusions",
           "new pleural effusion on the left"]
FILLER = [
    "The heart size is within normal limits.", "The mediastinal contours are unremarkable.",
    "There is no focal airspace consolidation.", "No pneumothorax is seen.", "The osseous structures are intact.",
    "Degenerative changes of the thoracic spine.", "The trachea is midline.", "Surgical clips in the upper abdomen.",
    "Lungs are hyperexpanded with flattened diaphragms.", "Stable calcified granuloma in the right upper lobe.",
    "Patient is status post sternotomy.", "Visualized upper abdomen is unremarkable.",
]


def _examples(n, seed):
    rng = random.Random(seed)
    texts, y = [], []
    for i in range(n):
        sents = rng.sample(FILLER, rng.randint(1, 3))
        pos = i % 2 == 0
        if pos:
            sents.insert(rng.randint(0, len(sents)), f"There is a {rng.choice(PHRASES)}.")
        texts.append(" ".join(sents))
        y.append([1.0 if pos else 0.0])
    return texts, np.asarray(y, dtype=np.float32)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    enc = TextEncoder.from_config(TextEncoderConfig(max_length=MAX_LENGTH, stride=8, max_chunks=16, freeze_layers=6))
    assert enc.config.pooling == "tokens"  # the default pooling is what the acceptance is about
    model = TextClassifier(encoder=enc, num_labels=1, dropout=0.0)
    texts, y = _examples(160, 0)
    notes = encode_notes(model, texts)
    cache = cache_frozen_states(model, notes)  # encoder fully frozen: compute once, train the head only
    fit_text_classifier(model, notes, y, epochs=3, batch_size=16, lr_head=3e-3, train_cache=cache, seed=0)
    return model


def test_classifier_learned_the_phrase(trained):
    texts, y = _examples(40, 1)
    p = predict_proba(trained, encode_notes(trained, texts))[:, 0]
    assert p[y[:, 0] == 1].min() > p[y[:, 0] == 0].max()


def test_phrase_at_the_end_of_a_long_note_is_found(trained):
    rng = random.Random(3)
    nt = trained.encoder.note_tokenizer()
    filler = []
    while True:
        filler.append(rng.choice(FILLER))
        if len(nt.tokenizer(" ".join(filler), add_special_tokens=False)["input_ids"]) > 5 * MAX_LENGTH:
            break
    phrase = "There is a moderate left pleural effusion."
    note = " ".join(filler) + " " + phrase
    start, end = len(note) - len(phrase), len(note)
    enc_long, enc_phrase = nt.encode(note), nt.encode(phrase)
    assert enc_long.num_chunks >= 6 and not enc_long.truncated  # really split, nothing dropped
    p_long, p_phrase = predict_proba(trained, [enc_long, enc_phrase])[:, 0]
    assert 0.5 < p_phrase < 0.999  # not saturated, so the 0.05 tolerance means something
    assert abs(p_long - p_phrase) <= 0.05
    # control: the same long note without the phrase is negative (length alone does not drive the score)
    (p_filler,) = predict_proba(trained, [nt.encode(" ".join(filler))])[:, 0]
    assert p_filler < 0.5
    print(f"p(long)={p_long:.4f} p(phrase)={p_phrase:.4f} p(filler)={p_filler:.4f} chunks={enc_long.num_chunks}")

    batch = collate_notes([enc_long])
    trained.eval()
    with torch.no_grad():
        out = trained(batch["input_ids"], batch["attention_mask"], batch["keep"])
    spans = stitch_token_scores(out.attention[0, 0], enc_long.offsets, enc_long.keep)
    peak = max(spans, key=lambda s: s.score)
    assert start <= peak.start and peak.end <= end, (note[peak.start : peak.end], peak)
    words = word_scores(spans, note)
    top_word = max(words, key=lambda w: w.score)
    assert start <= top_word.start < end
    # attention mass on the phrase dominates the rest of the (5× longer) note
    mass = sum(s.score for s in spans if s.start >= start)
    assert mass > 0.5


def test_cached_prediction_handles_batches_of_empty_notes(trained):
    notes = encode_notes(trained, [None, "", "There is a large right pleural effusion."])
    cache = cache_frozen_states(trained, notes)
    assert cache[0].shape == (0, 0, trained.encoder.hidden_size)
    p_cached = predict_proba(trained, notes, batch_size=2, cache=cache)[:, 0]
    p_live = predict_proba(trained, notes, batch_size=2)[:, 0]
    assert p_cached[0] == p_cached[1]  # no text: the label prior (head bias), never NaN
    np.testing.assert_allclose(p_cached, p_live, atol=1e-3)  # fp16 cache vs live forward
