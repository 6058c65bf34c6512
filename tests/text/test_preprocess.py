"""Sections with fall-back, normalisation with an offset map, best-effort PHI scrubbing."""

from __future__ import annotations

import pytest

from clinmm.text.preprocess import normalize_text, parse_sections, scrub_phi

NOTE = ("Exam: CXR 2 views\nINDICATION:  cough,\u00a0fever\u200b for 3 days.\nHISTORY: smoker.\n"
        "FINDINGS: Heart size normal.   No pleural effusion.\tIMPRESSION: No acute disease.")


def test_normalize_keeps_a_map_to_original_offsets():
    n = normalize_text(NOTE)
    assert "  " not in n.text and "\u200b" not in n.text and "\u00a0" not in n.text and "\t" not in n.text
    assert len(n.index) == len(n.text)
    for word in ("fever", "effusion", "IMPRESSION", "acute disease"):
        i = n.text.index(word)
        s, e = n.to_original(i, i + len(word))
        assert NOTE[s:e] == word
    assert normalize_text("ﬁbrosis").text == "fibrosis"  # NFKC ligature, both characters map to the ligature
    assert normalize_text("ﬁbrosis").to_original(0, 2) == (0, 1)
    assert normalize_text(None).text == "" and normalize_text("  \n ").text == ""


def test_sections_with_synonyms_and_original_spans():
    s = parse_sections(NOTE)
    assert s.names() == ["technique", "indication", "history", "findings", "impression"]
    for sec in s.sections:
        assert NOTE[sec.start : sec.end] == sec.text
    assert s.get("impression") == "No acute disease."
    assert s.get("findings").startswith("Heart size normal.")
    assert parse_sections("Reason for exam: chest pain. Conclusion: normal.").names() == ["indication", "impression"]
    sel = s.select(("findings", "impression"))
    assert sel.text == "FINDINGS: Heart size normal. No pleural effusion.\nIMPRESSION: No acute disease."
    i = sel.text.index("pleural")
    a, b = sel.to_original(i, i + len("pleural effusion"))
    assert NOTE[a:b] == "pleural effusion"


def test_section_fallbacks():
    s = parse_sections("Cough and fever for three days.")
    assert s.fallback and s.names() == ["body"] and s.get("findings") == ""
    assert s.select(("findings",)).text == "Cough and fever for three days."  # falls back to the whole note
    s = parse_sections("Seen in clinic. Impression: pneumonia.")
    assert s.names() == ["preamble", "impression"] and s.get("preamble") == "Seen in clinic."
    assert parse_sections("").sections == [] and parse_sections(None).fallback
    # a colon-free mention of a header word is not a header
    assert parse_sections("No findings of concern.").names() == ["body"]


@pytest.mark.parametrize(
    "text,gone",
    [
        ("Seen on 03/04/2021 for cough.", "03/04/2021"),
        ("Prior study 2020-11-05 compared.", "2020-11-05"),
        ("Study from Jan 5, 2020 reviewed.", "Jan 5, 2020"),
        ("Study from 5 January 2020 reviewed.", "5 January 2020"),
        ("Call (317) 555-1234 with results.", "555-1234"),
        ("Call 317-555-1234 with results.", "317-555-1234"),
        ("Discussed with Dr. Alan Jones at bedside.", "Alan Jones"),
        ("Patient: Mary O'Neil, 63 y.", "Mary O'Neil"),
        ("MRN: A1234567 cough", "A1234567"),
        ("Results sent to j.doe@example.org today.", "j.doe@example.org"),
        ("Acquired 20240312 on the portable unit.", "20240312"),
        ("Mrs Smith reports cough.", "Smith"),
        ("Prof. Ada Lovelace reviewed.", "Ada Lovelace"),
        ("Record 88123456 reviewed.", "88123456"),
    ],
)
def test_scrub_removes_common_phi(text, gone):
    r = scrub_phi(text)
    assert gone not in r.text and r.spans
    masked = scrub_phi(text, same_length=True)
    assert len(masked.text) == len(text)  # offsets still valid for highlighting
    assert all(masked.text[s:e] == "█" * (e - s) for s, e, _ in masked.spans)


def test_scrub_keeps_clinical_content():
    text = "No pleural effusion. Heart size 12 cm. T2 vertebra. Follow up in 3 months. 2 views of the chest."
    assert scrub_phi(text).text == text
