"""Is one study like what the model was trained on? The single-study counterpart of the batch drift report.

``clinmm explain`` and the dashboard's score-one-study page score a study alone, where a batch PSI means nothing. This
check compares the study with what the checkpoint records about its training data:

- **Scope** (``config.json`` ``scope``): the DICOM modality, view and body part must be among those the model was
  trained on. A study without a Modality attribute is out of scope too (the model cannot know what it is looking at);
  a blank view or body part is not (many archives leave them empty).
- **Unlike the training images** (``reference.json``): each raw-intensity statistic (mean, std, 5th and 95th
  percentile of the modality values) and, for checkpoints that record it, the pixel grid (rows, columns) must lie
  inside the central ``coverage`` range of the training images' values. Outside it, the prediction is an
  extrapolation: the study is still scored, with a warning.

Messages name attributes and values (a modality code, a number), never patient or study identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ScopeRule", "StudyCheck", "StudyChecker", "check_study", "INTENSITY_STATS"]

INTENSITY_STATS = ("mean", "std", "p05", "p95")
_GRID_STATS = ("rows", "cols")


@dataclass
class StudyCheck:
    """The outcome of :func:`check_study`.

    Args:
        scope_violations: ``["modality:CT", "modality:missing", "view:LAT", ...]``; empty when in scope.
        unlike_training: one sentence per statistic outside the training range.
        checked: what could be checked (``scope``, ``intensity``, ``grid``); a study without an image checks nothing.
        codes: the statistics outside the training range, compactly (``intensity:p95``, ``grid:rows``): the
            ``unlike_training`` column of batch scoring.
    """

    scope_violations: list[str] = field(default_factory=list)
    unlike_training: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    @property
    def in_scope(self) -> bool:
        return not self.scope_violations

    def scope_message(self, scope: dict | None = None) -> str:
        """One sentence for an out-of-scope study ("" when in scope)."""
        if self.in_scope:
            return ""
        trained = ", ".join((scope or {}).get("modalities") or []) or "?"
        return (f"outside the model's scope ({'; '.join(self.scope_violations)}); the model was trained on "
                f"{trained} images, so its prediction for this study is not valid")

    def to_dict(self) -> dict[str, Any]:
        return {"in_scope": self.in_scope, "scope_violations": list(self.scope_violations),
                "unlike_training": list(self.unlike_training), "codes": list(self.codes),
                "checked": list(self.checked)}


@dataclass
class ScopeRule:
    """What the checkpoint was trained on (empty list = anything).

    Args:
        modalities: DICOM Modality values.
        views: ViewPosition values.
        body_parts: BodyPartExamined values.
        force: score out-of-scope studies anyway (their row says so in ``scope``).
    """

    modalities: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    body_parts: list[str] = field(default_factory=list)
    force: bool = False

    @classmethod
    def from_checkpoint(cls, scope: dict, *, force: bool = False) -> ScopeRule:
        def up(key: str) -> list[str]:
            return sorted({str(v).strip().upper() for v in scope.get(key, []) or [] if str(v).strip()})

        return cls(modalities=up("modalities"), views=up("views"), body_parts=up("body_parts"), force=force)

    def violations(self, modality: str, view: str, body_part: str) -> list[str]:
        """``["modality:CT", ...]`` for every attribute outside the scope. A blank view or body part is not a
        violation (archives often leave them empty); a blank modality is (``modality:missing``) when the scope
        names modalities, as training skips such images."""
        out = []
        if self.modalities and not str(modality or "").strip():
            out.append("modality:missing")
        for name, value, allowed in (("modality", modality, self.modalities), ("view", view, self.views),
                                     ("body_part", body_part, self.body_parts)):
            v = str(value or "").strip().upper()
            if v and allowed and v not in allowed:
                out.append(f"{name}:{v}")
        return out


def _range(values: list[float], coverage: float) -> tuple[float, float] | None:
    ref = np.asarray(values, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size < 20:  # too few training images to call anything unusual
        return None
    tail = (1.0 - coverage) / 2.0
    lo, hi = np.quantile(ref, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class StudyChecker:
    """Checks studies against one checkpoint's scope and training reference; the ranges are computed once, so a batch
    of thousands of studies costs one comparison per statistic each.

    Args:
        scope: the checkpoint's scope (``modalities``, ``views``, ``body_parts``).
        reference: the checkpoint's ``reference.json`` (``intensity``: stat → training values; optionally ``grid``:
            ``rows`` / ``cols`` → training values).
        coverage: central fraction of the training values that counts as usual (default 99.8 %: about 1 in 125
            training-like studies gets a warning on one of the four intensity statistics by chance).
    """

    def __init__(self, *, scope: dict | None, reference: dict | None, coverage: float = 0.998) -> None:
        if not 0.5 <= coverage < 1.0:
            raise ValueError(f"study check: coverage must be in [0.5, 1), got {coverage}")
        self.scope = scope or {}
        self.rule = ScopeRule.from_checkpoint(self.scope)
        ref = reference or {}
        intensity = ref.get("intensity") or {}
        grid = ref.get("grid") or {}
        self.has_intensity, self.has_grid = bool(intensity), bool(grid)
        self.intensity = {k: _range(intensity.get(k) or [], coverage) for k in INTENSITY_STATS}
        self.grid = {k: _range(grid.get(k) or [], coverage) for k in _GRID_STATS}

    def __call__(self, sample: Any) -> StudyCheck:
        """Check one prepared study (a :class:`clinmm.data.dataset.Sample`: ``meta``, ``image_stats``,
        ``letterbox``); a study without an image checks nothing."""
        check = StudyCheck()
        if getattr(sample, "image", None) is None:
            return check
        meta = sample.meta or {}
        check.scope_violations = self.rule.violations(
            str(meta.get("Modality", "") or ""), str(meta.get("ViewPosition", "") or ""),
            str(meta.get("BodyPartExamined", "") or ""))
        check.checked.append("scope")
        stats = sample.image_stats or {}
        if stats and self.has_intensity:
            check.checked.append("intensity")
            for k in INTENSITY_STATS:
                bounds = self.intensity[k] if k in stats else None
                if bounds is None:
                    continue
                v = float(stats[k])
                if not bounds[0] <= v <= bounds[1]:
                    check.codes.append(f"intensity:{k}")
                    check.unlike_training.append(
                        f"raw intensity {k} {_fmt(v)} is outside the training images' range "
                        f"[{_fmt(bounds[0])}, {_fmt(bounds[1])}]")
        box = getattr(sample, "letterbox", None)
        if self.has_grid and box is not None:
            check.checked.append("grid")
            for k, v in zip(_GRID_STATS, box.orig_shape):
                bounds = self.grid[k]
                if bounds is not None and not bounds[0] <= float(v) <= bounds[1]:
                    check.codes.append(f"grid:{k}")
                    check.unlike_training.append(f"image {k} {int(v)} is outside the training images' range "
                                                 f"[{int(bounds[0])}, {int(bounds[1])}]")
        return check


def check_study(sample: Any, *, scope: dict | None, reference: dict | None, coverage: float = 0.998) -> StudyCheck:
    """Check one prepared study against the checkpoint's scope and training reference (:class:`StudyChecker`).

    Args:
        sample: a :class:`clinmm.data.dataset.Sample` (``meta``, ``image_stats``, ``letterbox``).
        scope: the checkpoint's scope (``modalities``, ``views``, ``body_parts``).
        reference: the checkpoint's ``reference.json``.
        coverage: central fraction of the training values that counts as usual (see :class:`StudyChecker`).

    Returns:
        :class:`StudyCheck`.
    """
    return StudyChecker(scope=scope, reference=reference, coverage=coverage)(sample)
