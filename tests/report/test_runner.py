"""The report gallery's note excerpt uses the one scrubbing rule (``scrub_phi``), flattened and cut to length."""

from __future__ import annotations

from clinmm.report._runner import scrub_note
from clinmm.text.preprocess import scrub_phi


def test_gallery_snippet_is_scrub_phi_flattened_and_cut() -> None:
    note = "Seen by Dr. Jones on 12/03/2024.\n\nMail j.doe@example.org, MRN: A1234567.   Fever 39.2 since Monday."
    shown = scrub_note(note)
    assert shown == " ".join(scrub_phi(note).text.split())
    for secret in ("Jones", "12/03/2024", "j.doe@example.org", "A1234567"):
        assert secret not in shown
    assert "Fever 39.2 since Monday." in shown and "\n" not in shown
    cut = scrub_note("cough " * 100, max_chars=40)
    assert len(cut) == 40 and cut.endswith("…")
