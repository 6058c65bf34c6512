"""Report figures drawn with matplotlib (Agg) and returned as base64 PNG strings for inline ``<img src="data:...">``."""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from clinmm.report.validation import ValidationReport

__all__ = ["roc_figure", "reliability_figure", "forest_figure"]

_DPI = 80
# Okabe-Ito colour-blind-safe palette
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(n: int, *, width: float = 3.0, height: float = 3.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(n, 5)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def roc_figure(report: ValidationReport) -> str | None:
    """ROC curves, one panel per label, the evaluated model and every comparator."""
    if not report.roc_curves:
        return None
    models = list(dict.fromkeys(c.model for c in report.roc_curves))
    fig, axes = _grid(len(report.labels))
    for ax, lab in zip(axes, report.labels):
        for k, model in enumerate(models):
            for cur in report.roc_curves:
                if cur.label == lab and cur.model == model:
                    ax.plot(cur.fpr, cur.tpr, color=_COLOURS[k % len(_COLOURS)], lw=1.5, label=model)
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":")
        ax.set_title(lab, fontsize=10)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="lower right")
    return _png(fig)


def reliability_figure(report: ValidationReport) -> str | None:
    """Reliability diagrams (15 equal-width bins) before and after recalibration, one panel per label."""
    if not report.calibration:
        return None
    fig, axes = _grid(len(report.calibration))
    for ax, cal in zip(axes, report.calibration):
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":")
        for summary, name, colour, style in ((cal.before, "before", _COLOURS[1], "--"),
                                             (cal.after, "after", _COLOURS[0], "-")):
            if summary is None:
                continue
            pp = np.asarray(summary.bins.prob_pred, dtype=float)
            pt = np.asarray(summary.bins.prob_true, dtype=float)
            ok = np.isfinite(pp) & np.isfinite(pt)
            ax.plot(pp[ok], pt[ok], style, marker="o", ms=3, color=colour,
                    label=f"{name} (ECE {summary.ece:.3f})")
        ax.set_title(cal.label, fontsize=10)
        ax.set_xlabel("mean predicted probability", fontsize=8)
        ax.set_ylabel("observed fraction", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def forest_figure(report: ValidationReport) -> str | None:
    """Macro AUROC with 95 % CI per modality group and subgroup (small groups drawn hollow)."""
    groups = report.by_modality + report.subgroups
    rows = [(f"{g.variable}={g.group or '(blank)'} (n={g.n_studies})", g.macro.get("auroc"), g.small) for g in groups]
    rows = [r for r in rows if r[1] is not None and math.isfinite(r[1].value)]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(rows) + 1.0))
    y = np.arange(len(rows))[::-1]
    for yi, (name, ci, small) in zip(y, rows):
        lo = ci.lower if math.isfinite(ci.lower) else ci.value
        hi = ci.upper if math.isfinite(ci.upper) else ci.value
        ax.plot([lo, hi], [yi, yi], color=_COLOURS[0], lw=1.5)
        ax.plot([ci.value], [yi], "o", color=_COLOURS[0], mfc="white" if small else _COLOURS[0])
    overall = report.macro.get("auroc")
    if overall is not None and math.isfinite(overall.value):
        ax.axvline(overall.value, color="#999999", ls=":", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.set_xlabel("macro AUROC (95 % CI); hollow = fewer than 30 studies", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    return _png(fig)
