"""Trivial baselines that a real model has to beat: keyword match on the note, brightest pixel on the image.

- **keyword match**: score 1 when the note contains any keyword of the finding (case-insensitive, whole words),
  else 0 — it cannot tell "fever" from "no fever", nor know a synonym it was not given.
- **brightest pixel**: the brightest spot of the image (after a robust 1–99 percentile normalisation and a small
  smoothing) — side markers, electrodes and dense calcifications are brighter than any faint lesion.
- **pneumonia** (needs both): the product of the two scores (fever keyword × brightest pixel).

:func:`evaluate_baselines` scores a labelled manifest split with them and reports AUROC per finding (scikit-learn).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from clinmm.errors import IngestError, ManifestError
from clinmm.metrics import known_auroc

__all__ = [
    "KEYWORDS",
    "IMAGE_FINDINGS",
    "keyword_score",
    "brightest_pixel_score",
    "BaselineResult",
    "evaluate_baselines",
]

logger = logging.getLogger(__name__)

KEYWORDS: dict[str, tuple[str, ...]] = {
    "fever": ("fever", "fevers", "febrile", "pyrexia", "temperature"),
    "dyspnea": ("dyspnea", "dyspnoea", "shortness of breath", "short of breath", "breathless", "breathlessness",
                "sob"),
}
IMAGE_FINDINGS: tuple[str, ...] = ("nodule", "consolidation")


def keyword_score(text: str, finding: str) -> float:
    """1.0 if the note mentions any keyword of ``finding`` (negated or not), else 0.0.

    Args:
        text: the note ('' = no note → 0.0).
        finding: a key of :data:`KEYWORDS`.

    Raises:
        KeyError: no keywords for ``finding``.
    """
    words = KEYWORDS[finding]
    pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"
    return 1.0 if re.search(pattern, text, flags=re.IGNORECASE) else 0.0


def brightest_pixel_score(pixels: np.ndarray) -> float:
    """Brightest spot of a 2D image (higher = brighter), robustly normalised.

    Args:
        pixels: (H, W) modality values, higher = brighter.

    Returns:
        ``max(smooth(x))`` with ``x = (pixels - p1) / (p99 - p1)`` and a 1-pixel Gaussian smoothing.
    """
    x = pixels.astype(np.float32, copy=False)
    lo, hi = np.percentile(x, [1.0, 99.0])
    x = (x - lo) / max(float(hi - lo), 1e-6)
    return float(ndimage.gaussian_filter(x, 1.0).max())


@dataclass
class BaselineResult:
    """AUROC of the trivial baselines on one split.

    Args:
        split: the manifest split scored.
        auroc: ``"<baseline>/<finding>"`` → AUROC (NaN when a class is missing).
        n: ``"<baseline>/<finding>"`` → studies scored (known label and the needed modality present).
    """

    split: str
    auroc: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)


def evaluate_baselines(manifest: str | Path, *, split: str = "test") -> BaselineResult:
    """Score a labelled manifest split with the keyword and brightest-pixel baselines.

    Args:
        manifest: manifest CSV (``docs/dev/contracts.md`` columns); image paths are relative to its folder.
        split: which split to score.

    Returns:
        :class:`BaselineResult` with keyword AUROC for the note findings, brightest-pixel AUROC for the image
        findings, and their product for ``pneumonia``. Studies lacking the modality a baseline needs are skipped.

    Raises:
        ManifestError: the manifest lacks a needed column or has no row in ``split``.
    """
    from clinmm.io.load import load_image  # lazy: only needed here

    path = Path(manifest)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == split]
    if not rows:
        raise ManifestError(f"{path}: no rows with split={split!r}")
    needed = {"image_path", "note_text", *(f"label_{f}" for f in (*IMAGE_FINDINGS, *KEYWORDS, "pneumonia"))}
    missing = needed - set(rows[0])
    if missing:
        raise ManifestError(f"{path}: missing column(s) {sorted(missing)}")
    bright: dict[int, float] = {}
    for i, row in enumerate(rows):
        if not row["image_path"]:
            continue
        try:
            vol = load_image(path.parent / row["image_path"])
        except IngestError as err:
            logger.warning("%s: image of row %d not loaded: %s", path, i, err.status)
            continue
        bright[i] = brightest_pixel_score(vol.pixels[vol.pixels.shape[0] // 2])
    result = BaselineResult(split=split)
    tables: dict[str, tuple[list[int], list[float]]] = {}
    for i, row in enumerate(rows):
        for finding in KEYWORDS:
            if row[f"label_{finding}"] != "" and row["note_text"]:
                tables.setdefault(f"keyword/{finding}", ([], []))
                tables[f"keyword/{finding}"][0].append(int(row[f"label_{finding}"]))
                tables[f"keyword/{finding}"][1].append(keyword_score(row["note_text"], finding))
        for finding in IMAGE_FINDINGS:
            if row[f"label_{finding}"] != "" and i in bright:
                tables.setdefault(f"brightest_pixel/{finding}", ([], []))
                tables[f"brightest_pixel/{finding}"][0].append(int(row[f"label_{finding}"]))
                tables[f"brightest_pixel/{finding}"][1].append(bright[i])
        if row["label_pneumonia"] != "" and i in bright and row["note_text"]:
            key = "keyword_x_brightest/pneumonia"
            tables.setdefault(key, ([], []))
            tables[key][0].append(int(row["label_pneumonia"]))
            tables[key][1].append(keyword_score(row["note_text"], "fever") * bright[i])
    for key, (y, s) in sorted(tables.items()):
        result.auroc[key] = known_auroc(y, s)
        result.n[key] = len(y)
    return result
