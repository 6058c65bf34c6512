"""Clinical note preprocessing: sections, normalisation with an offset map, best-effort PHI scrubbing for display.

Everything here keeps a way back to character offsets of the ORIGINAL note, because explanations (token attributions)
are shown on the original text:

- :func:`normalize_text` — Unicode NFKC, control characters removed, whitespace runs collapsed; returns
  :class:`NormalizedText` whose ``to_original(start, end)`` maps a span of the normalised text back.
- :func:`parse_sections` — ``indication`` / ``history`` / ``findings`` / ``impression`` (+ ``comparison``,
  ``technique``) from ``HEADER:`` markers with common synonyms ("reason for exam", "conclusion", ...). Fall-back: a
  note without any header is one ``body`` section; text before the first header is ``preamble``. Spans are original
  offsets. :meth:`Sections.select` joins chosen sections into one model input with an offset map.
- :func:`scrub_phi` — replaces dates, phone numbers, and names after "Dr." / "Patient:" (and "Name:", "MRN:") for
  DISPLAY. It is a SAFETY NET, NOT A GUARANTEE of de-identification: free text can carry identifiers in forms no
  pattern list anticipates. Notes shown to users are scrubbed and labelled as best-effort (see docs/text.md).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "NormalizedText",
    "normalize_text",
    "Section",
    "Sections",
    "parse_sections",
    "ScrubResult",
    "scrub_phi",
    "SECTION_ALIASES",
]


# ---------------------------------------------------------------------------------------------------- normalisation
@dataclass
class NormalizedText:
    """Normalised text with a character map back to the original.

    Attributes:
        text: the normalised text.
        index: (len(text),) int64, for each normalised character the index of the original character it came from.
        original_length: length of the original text.
    """

    text: str
    index: np.ndarray
    original_length: int

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a ``[start, end)`` span of :attr:`text` to the smallest original span covering it."""
        if end <= start:
            pos = int(self.index[start]) if start < len(self.index) else self.original_length
            return pos, pos
        return int(self.index[start]), int(self.index[end - 1]) + 1


def _build(pieces: list[tuple[str, int]], original_length: int) -> NormalizedText:
    text = "".join(p for p, _ in pieces)
    index = np.fromiter((i for p, i in pieces for _ in p), dtype=np.int64, count=len(text))
    return NormalizedText(text=text, index=index, original_length=original_length)


def normalize_text(text: str | None, *, collapse_newlines: bool = False) -> NormalizedText:
    """NFKC-normalise each character, drop control/format characters, collapse whitespace runs, strip.

    Args:
        text: original note (``None`` → empty).
        collapse_newlines: also turn line breaks into spaces (default: keep one newline, useful for section headers).

    Returns:
        :class:`NormalizedText` (``index`` maps every output character to its original position).
    """
    text = text or ""
    pieces: list[tuple[str, int]] = []
    pending_ws: tuple[str, int] | None = None
    for i, ch in enumerate(text):
        if ch in "\r\n" or (ch.isspace()):
            kind = "\n" if (ch in "\r\n" and not collapse_newlines) else " "
            if pending_ws is None or (kind == "\n" and pending_ws[0] == " "):
                pending_ws = (kind, i)
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf"):
            continue
        norm = unicodedata.normalize("NFKC", ch)
        if pending_ws is not None and pieces:
            pieces.append(pending_ws)
        pending_ws = None
        pieces.append((norm, i))
    return _build(pieces, len(text))


# ---------------------------------------------------------------------------------------------------------- sections
SECTION_ALIASES: dict[str, tuple[str, ...]] = {
    "indication": ("indication", "indications", "clinical indication", "reason for exam", "reason for examination",
                   "reason for study", "reason"),
    "history": ("history", "clinical history", "clinical information", "clinical details", "hpi",
                "history of present illness"),
    "comparison": ("comparison", "comparisons", "prior"),
    "technique": ("technique", "procedure", "examination", "exam"),
    "findings": ("findings", "finding", "report", "description"),
    "impression": ("impression", "impressions", "conclusion", "conclusions", "assessment", "summary", "opinion",
                   "diagnosis"),
}
_ALIAS_TO_NAME = {alias: name for name, aliases in SECTION_ALIASES.items() for alias in aliases}
_HEADER = re.compile(
    r"(?:(?<=^)|(?<=[\n.;]))[ \t]*(?P<h>" + "|".join(sorted((re.escape(a) for a in _ALIAS_TO_NAME), key=len,
                                                          reverse=True)) + r")[ \t]*:",
    re.IGNORECASE,
)


@dataclass
class Section:
    """One section: canonical ``name``, the header as written, and its body span ``[start, end)`` in the original."""

    name: str
    header: str
    start: int
    end: int
    text: str


@dataclass
class Sections:
    """Parsed sections of one note (original offsets); ``fallback`` is True when no header was found."""

    source: str
    sections: list[Section] = field(default_factory=list)
    fallback: bool = False

    def get(self, name: str, default: str = "") -> str:
        """Text of the section(s) called ``name`` (joined with a space when repeated), else ``default``."""
        found = [s.text for s in self.sections if s.name == name and s.text]
        return " ".join(found) if found else default

    def names(self) -> list[str]:
        """Section names in order of appearance."""
        return [s.name for s in self.sections]

    def select(self, names: tuple[str, ...] | list[str], *, labelled: bool = True,
               fallback_to_all: bool = True) -> NormalizedText:
        """Join the chosen sections (in the given order) into one text with a map back to original offsets.

        Args:
            names: canonical section names, e.g. ``("findings", "impression")``.
            labelled: prefix each part with ``NAME:`` (the prefix maps to the original header).
            fallback_to_all: when none of ``names`` is present, return the whole note (normalised).
        """
        parts: list[tuple[str, int]] = []
        for name in names:
            for s in self.sections:
                if s.name != name or not s.text:
                    continue
                if parts:
                    parts.append(("\n", s.start))
                if labelled:
                    parts.extend((ch, s.start) for ch in f"{name.upper()}: ")
                body = normalize_text(s.text)
                parts.extend((ch, s.start + int(j)) for ch, j in zip(body.text, body.index))
        if not parts and fallback_to_all:
            return normalize_text(self.source)
        return _build(parts, len(self.source))


def parse_sections(text: str | None) -> Sections:
    """Split a note into sections at ``HEADER:`` markers (start of text, of a line, or after ``.``/``;``).

    Fall-back: no header → one ``body`` section with the whole note; text before the first header → ``preamble``.
    """
    text = text or ""
    matches = list(_HEADER.finditer(text))
    out = Sections(source=text)
    if not matches:
        body = text.strip()
        if body:
            start = text.index(body)
            out.sections.append(Section("body", "", start, start + len(body), body))
        out.fallback = True
        return out
    first = matches[0].start("h")
    pre = text[:first].strip()
    if pre:
        start = text.index(pre)
        out.sections.append(Section("preamble", "", start, start + len(pre), pre))
    for m, nxt in zip(matches, matches[1:] + [None]):
        end = nxt.start("h") if nxt is not None else len(text)
        raw = text[m.end() : end]
        body = raw.strip()
        start = m.end() + (raw.index(body) if body else 0)
        name = _ALIAS_TO_NAME[m.group("h").lower()]
        out.sections.append(Section(name, m.group("h"), start, start + len(body), body))
    return out


# ---------------------------------------------------------------------------------------------------- PHI scrubbing
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
          r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("DATE", re.compile(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b")),
    ("DATE", re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b")),  # DICOM-style 20240312
    ("DATE", re.compile(r"\b\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})\b")),
    ("DATE", re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", re.IGNORECASE)),
    ("DATE", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\s+\d{{4}}\b", re.IGNORECASE)),
    ("DATE", re.compile(rf"\b{_MONTH}\s+\d{{4}}\b", re.IGNORECASE)),
    ("PHONE", re.compile(r"(?:\+?\d{1,3}[\s.-]?)?\(\d{3}\)\s*\d{3}[\s.-]?\d{4}\b")),
    ("PHONE", re.compile(r"\b(?:\+?\d{1,3}[\s.-])?\d{3}[\s.-]\d{3}[\s.-]\d{4}\b")),
    ("PHONE", re.compile(r"\b\d{3}-\d{4}\b")),
    ("ID", re.compile(r"(?i)\b(?:mrn|medical record(?: number)?|acc(?:ession)?(?: number| no\.?)?|id)\s*[:#]\s*"
                      r"(?P<v>[A-Z0-9-]{4,})")),
    ("NAME", re.compile(r"\b(?:Dr|Doctor|Drs|Mr|Mrs|Ms|Miss|Prof)\.?\s+(?P<v>[A-Z][A-Za-z'-]+(?:\s+[A-Z]\.)?"
                        r"(?:\s+[A-Z][A-Za-z'-]+)?)")),
    ("NAME", re.compile(r"(?i:\b(?:patient|pt|name|patient name)\s*:)\s*(?P<v>[A-Z][A-Za-z'-]+"
                        r"(?:,?\s+(?![A-Z][A-Za-z'-]*\s*[:#])[A-Z][A-Za-z'-]+){0,2})")),
    ("ID", re.compile(r"\b\d{5,}\b")),  # unlabelled record / accession numbers (after dates and phone numbers)
]


@dataclass
class ScrubResult:
    """Scrubbed text and what was replaced.

    Attributes:
        text: the text for display.
        spans: ``(start, end, kind)`` replaced spans in the ORIGINAL text (kind: EMAIL, DATE, PHONE, NAME, ID).
        same_length: True when replacements kept every character position (then original offsets still apply).
    """

    text: str
    spans: list[tuple[int, int, str]]
    same_length: bool


def scrub_phi(text: str | None, *, same_length: bool = False, mask_char: str = "█") -> ScrubResult:
    """Best-effort removal of e-mail addresses, dates, phone numbers, IDs (labelled, or runs of 5+ digits) and names
    after a title ("Dr.", "Mrs", "Prof") or "Patient:" — for display only. The one scrubbing rule of clinmm: the
    dashboard's note panel and the validation report's gallery both use it.

    This is a safety net, not de-identification: free text can hold identifiers no pattern catches (nicknames,
    addresses, rare formats). Show the result with a visible "best-effort" notice.

    Args:
        text: the note.
        same_length: replace each character by ``mask_char`` so character offsets (attribution highlights) stay valid;
            otherwise a span becomes ``[EMAIL]``, ``[DATE]``, ``[PHONE]``, ``[NAME]`` or ``[ID]``.
        mask_char: the masking character for ``same_length``.
    """
    text = text or ""
    spans: list[tuple[int, int, str]] = []
    for kind, pat in _PATTERNS:
        for m in pat.finditer(text):
            s, e = (m.start("v"), m.end("v")) if "v" in pat.groupindex and m.group("v") else (m.start(), m.end())
            if any(s < e2 and s2 < e for s2, e2, _ in spans):
                continue
            spans.append((s, e, kind))
    spans.sort()
    pieces, last = [], 0
    for s, e, kind in spans:
        pieces.append(text[last:s])
        pieces.append(mask_char * (e - s) if same_length else f"[{kind}]")
        last = e
    pieces.append(text[last:])
    return ScrubResult(text="".join(pieces), spans=spans, same_length=same_length)
