"""NoteTokenizer / EncodedNote / collate_notes: windows, offsets into the original text, one kept copy per token."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clinmm.models.text import default_text_model_path  # noqa: E402
from clinmm.text.tokenize import NoteTokenizer, collate_notes  # noqa: E402

NOTE = (
    "INDICATION:  63-year-old  with cough and fever.\n\nFINDINGS: The heart size is normal. No pleural effusion or "
    "pneumothorax. Mild bibasilar atelectasis. Café-au-lait spots noted.\tIMPRESSION: No acute cardiopulmonary "
    "process."
)


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_text_model_path(), local_files_only=True)


def _full_spans(tok, text):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(s) for s in enc["offset_mapping"]]


@pytest.mark.parametrize("max_length,stride", [(16, 4), (24, 0), (32, 10), (128, 32)])
def test_keep_covers_every_token_exactly_once(hf_tokenizer, max_length, stride):
    nt = NoteTokenizer(tokenizer=hf_tokenizer, max_length=max_length, stride=stride, max_chunks=50)
    enc = nt.encode(NOTE)
    K, L = enc.input_ids.shape
    assert enc.attention_mask.shape == enc.keep.shape == (K, L) and enc.offsets.shape == (K, L, 2)
    assert enc.input_ids.dtype == torch.int64 and enc.keep.dtype == torch.bool
    assert L <= max_length
    full = _full_spans(hf_tokenizer, NOTE)
    if max_length < 128:
        assert K > 1  # really chunked
    kept = enc.kept_spans()
    assert kept[0] == (0, 0)  # the first window's [CLS]
    assert kept[1:] == full  # each real token exactly once, in reading order
    # kept tokens are never padding and never a later window's [CLS]/[SEP]
    assert not (enc.keep & (enc.attention_mask == 0)).any()
    assert int(enc.keep[1:, 0].sum()) == 0


def test_offsets_point_at_the_right_characters(hf_tokenizer):
    nt = NoteTokenizer(tokenizer=hf_tokenizer, max_length=16, stride=4, max_chunks=50)
    enc = nt.encode(NOTE)
    for k in range(enc.num_chunks):
        toks = hf_tokenizer.convert_ids_to_tokens(enc.input_ids[k].tolist())
        for tok, (s, e), m in zip(toks, enc.offsets[k].tolist(), enc.attention_mask[k].tolist()):
            if not m or tok in ("[CLS]", "[SEP]"):
                assert (s, e) == (0, 0)
                continue
            piece = NOTE[s:e].lower()
            # BERT uncased strips accents: compare against the accent-stripped original
            import unicodedata

            piece = "".join(c for c in unicodedata.normalize("NFD", piece) if unicodedata.category(c) != "Mn")
            assert piece == tok.removeprefix("##"), (tok, NOTE[s:e])


def test_kept_copy_is_the_most_central(hf_tokenizer):
    nt = NoteTokenizer(tokenizer=hf_tokenizer, max_length=12, stride=4, max_chunks=50)
    enc = nt.encode(NOTE)
    # in a middle window the kept tokens form one contiguous block away from both edges
    k = 1
    pos = enc.keep[k].nonzero().flatten().tolist()
    assert pos == list(range(pos[0], pos[-1] + 1))
    assert pos[0] > 1 and pos[-1] < int(enc.attention_mask[k].sum()) - 2


@pytest.mark.parametrize("text", [None, "", "   \n\t "])
def test_empty_note_has_no_chunks(hf_tokenizer, text):
    nt = NoteTokenizer(tokenizer=hf_tokenizer, max_length=32, stride=8, max_chunks=4)
    enc = nt.encode(text)
    assert enc.num_chunks == 0 and enc.input_ids.shape == (0, 0) and enc.offsets.shape == (0, 0, 2)


def test_max_chunks_truncates_with_warning(hf_tokenizer):
    nt = NoteTokenizer(tokenizer=hf_tokenizer, max_length=16, stride=4, max_chunks=2)
    with pytest.warns(UserWarning, match="max_chunks"):
        enc = nt.encode(NOTE)
    assert enc.num_chunks == 2 and enc.truncated


def test_collate_pads_to_batch_max_only(hf_tokenizer):
    nt = NoteTokenizer(tokenizer=hf_tokenizer, max_length=32, stride=8, max_chunks=8)
    short, long_, empty = nt.encode("Cough."), nt.encode(NOTE), nt.encode(None)
    b = collate_notes([short, empty])
    assert b["input_ids"].shape == (2, 1, short.input_ids.shape[1])  # L = the short note's length, not 32
    assert b["offsets"].shape == (2, 1, short.input_ids.shape[1], 2)
    assert not b["attention_mask"][1].any() and not b["keep"][1].any()
    b = collate_notes([short, long_, empty])
    assert b["input_ids"].shape == (3, long_.num_chunks, 32)
    assert b["keep"].sum() == short.keep.sum() + long_.keep.sum()
    assert b["num_chunks"].tolist() == [1, long_.num_chunks, 0]
    b = collate_notes([empty])
    assert b["input_ids"].shape == (1, 1, 1) and not b["keep"].any()


def test_rejects_bad_settings(hf_tokenizer):
    with pytest.raises(ValueError, match="stride"):
        NoteTokenizer(tokenizer=hf_tokenizer, max_length=16, stride=14, max_chunks=2)
    with pytest.raises(ValueError, match="model_max_length"):
        NoteTokenizer(tokenizer=hf_tokenizer, max_length=1024, stride=8, max_chunks=2)
