"""The validation report's numbers: :class:`ValidationReport` (JSON-exportable) and the code that computes it.

Two layers:

1. :func:`compute_validation_report` — pure numpy / scikit-learn / scipy on arrays of labels and scores. Everything
   the HTML shows is computed here (and pinned by tests on toy data).
2. :func:`build_report` — runs a checkpoint over a manifest split through :mod:`clinmm.inference`, derives the
   image-only / text-only comparators from the SAME fused model with the note / the image removed (missing-modality
   inference) unless ``--compare`` checkpoints are given, collects the ingestion flow and the failure gallery, and
   renders the HTML (:mod:`clinmm.report.render`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import classification_report, roc_curve

from clinmm.metrics import (
    CalibrationSummary,
    ConfidenceInterval,
    DeLongResult,
    bootstrap_metrics,
    calibration_summary,
    delong_auc_ci,
    delong_roc_test,
)

__all__ = [
    "MODALITY_GROUPS",
    "SMALL_GROUP",
    "LabelResult",
    "CalibrationResult",
    "Comparison",
    "GroupResult",
    "FailureCase",
    "RocCurve",
    "ValidationReport",
    "select_confident_errors",
    "compute_validation_report",
    "build_report",
]

logger = logging.getLogger(__name__)

MODALITY_GROUPS: tuple[str, ...] = ("both", "image_only", "note_only", "none")
SMALL_GROUP = 30  # groups with fewer studies are flagged


@dataclass
class LabelResult:
    """Per-label discrimination and threshold metrics on the evaluated split.

    Attributes:
        label: finding name.
        n: studies with a known label; n_pos: positives; n_patients: patients among the n studies.
        threshold: stored decision threshold (on the calibrated probability).
        metrics: {metric: ConfidenceInterval} for auroc, auprc, sensitivity, specificity, ppv, npv, f1
            (patient-level stratified bootstrap).
        auroc_delong: AUROC with DeLong's asymptotic 95 % interval (for comparison with the bootstrap).
        confusion: {"tp", "fp", "tn", "fn"} at the threshold.
    """

    label: str
    n: int
    n_pos: int
    n_patients: int
    threshold: float
    metrics: dict[str, ConfidenceInterval]
    auroc_delong: ConfidenceInterval | None
    confusion: dict[str, int]


@dataclass
class CalibrationResult:
    """Calibration of one label before (raw model probability) and after the stored recalibration."""

    label: str
    before: CalibrationSummary | None
    after: CalibrationSummary


@dataclass
class Comparison:
    """DeLong test between two score sets for one label (same studies)."""

    label: str
    model_a: str
    model_b: str
    result: DeLongResult | None
    note: str = ""


@dataclass
class GroupResult:
    """Metrics within one group (a subgroup value or a modality-availability group).

    Attributes:
        variable: e.g. ``sex`` or ``modality``.
        group: the value, e.g. ``F`` or ``image_only``.
        n_studies, n_patients: group size.
        n_pos: {label: positives with a known label}.
        small: fewer than :data:`SMALL_GROUP` studies (estimates unstable).
        per_label: {label: {metric: ConfidenceInterval}}.
        macro: {metric: ConfidenceInterval}.
    """

    variable: str
    group: str
    n_studies: int
    n_patients: int
    n_pos: dict[str, int]
    small: bool
    per_label: dict[str, dict[str, ConfidenceInterval]]
    macro: dict[str, ConfidenceInterval]


@dataclass
class FailureCase:
    """One confident error for the gallery (de-identified material only).

    Attributes:
        study: an opaque study reference (manifest study_id or salted key, never a DICOM UID).
        label: finding.
        kind: ``false_positive`` or ``false_negative``.
        score: calibrated probability.
        threshold: decision threshold.
        truth: 0 or 1.
        modality: modality availability group.
        thumbnail_png: base64 PNG of the de-identified image thumbnail, or None.
        note_snippet: best-effort scrubbed note excerpt, or None.
    """

    study: str
    label: str
    kind: str
    score: float
    threshold: float
    truth: int
    modality: str = ""
    thumbnail_png: str | None = None
    note_snippet: str | None = None


@dataclass
class RocCurve:
    """A (down-sampled) ROC curve for the figure."""

    label: str
    model: str
    fpr: list[float]
    tpr: list[float]


@dataclass
class ValidationReport:
    """Everything the validation report shows. ``to_json`` gives a JSON document (NaN written as null).

    Attributes:
        title: report title.
        created_utc: ISO timestamp.
        labels: finding names in model order.
        model_name: name of the evaluated model in tables.
        n_studies, n_patients: evaluated split size.
        split: evaluated split name.
        model_card: intended use, training data, limitations (from the checkpoint's ``model_card.json``).
        ingestion_flow: {"manifest_studies", "split_studies", "included", "excluded": {status: n}, ...}.
        per_label: LabelResult per label.
        macro, micro: {metric: ConfidenceInterval}.
        classification_report: ``sklearn.metrics.classification_report(output_dict=True)`` on the studies with
            every label known, plus ``n_complete``.
        calibration: CalibrationResult per label.
        comparators: {name: description} of the comparator score sets.
        comparisons: DeLong tests.
        comparator_auroc: {model: {label: ConfidenceInterval (DeLong)}}.
        by_modality: GroupResult per modality-availability group present.
        subgroups: GroupResult per (variable, value).
        faithfulness: explanation faithfulness summary or None (not computed).
        failure_cases: the confident-error gallery.
        roc_curves: curves for the ROC figure.
        limitations: statements for the limitations section.
        methods: {key: text} statistical methods (bootstrap, DeLong, ECE...).
        n_boot, seed: bootstrap settings.
    """

    title: str
    created_utc: str
    labels: list[str]
    model_name: str
    n_studies: int
    n_patients: int
    split: str
    model_card: dict[str, Any]
    ingestion_flow: dict[str, Any]
    per_label: list[LabelResult]
    macro: dict[str, ConfidenceInterval]
    micro: dict[str, ConfidenceInterval]
    classification_report: dict[str, Any]
    calibration: list[CalibrationResult]
    comparators: dict[str, str]
    comparisons: list[Comparison]
    comparator_auroc: dict[str, dict[str, ConfidenceInterval]]
    by_modality: list[GroupResult]
    subgroups: list[GroupResult]
    faithfulness: dict[str, Any] | None
    failure_cases: list[FailureCase]
    roc_curves: list[RocCurve]
    limitations: list[str]
    methods: dict[str, str]
    n_boot: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (NaN / inf become None, numpy scalars become Python numbers)."""
        return _jsonable(dataclasses.asdict(self))

    def to_json(self, *, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Layer 1: arrays -> ValidationReport
# ----------------------------------------------------------------------------------------------------------------


def select_confident_errors(
    *, y_true: ArrayLike, y_score: ArrayLike, thresholds: ArrayLike, labels: Sequence[str], k: int = 8
) -> list[tuple[int, int, str, float]]:
    """The ``k`` most confident errors: false positives with the highest scores and false negatives with the lowest
    (ranked by the probability given to the wrong answer), at most ``ceil(k / C)`` per label unless fewer labels
    have errors, so one rare label does not fill the gallery.

    Args:
        y_true: (N, C) 0/1/NaN.
        y_score: (N, C) calibrated probabilities.
        thresholds: (C,).
        labels: C names.
        k: how many.

    Returns:
        [(row, label_index, kind, score)], most confident first (each study appears at most once).
    """
    yt = np.asarray(y_true, dtype=np.float64)
    ys = np.asarray(y_score, dtype=np.float64)
    th = np.asarray(thresholds, dtype=np.float64)[None, :]  # (1, C)
    fp = (yt == 0) & (ys >= th)
    fn = (yt == 1) & (ys < th)
    conf = np.where(fp, ys, np.where(fn, 1.0 - ys, -np.inf))  # (N, C): probability given to the wrong answer
    if len(labels) != yt.shape[1]:
        raise ValueError(f"`labels` must name {yt.shape[1]} labels; got {len(labels)}.")
    order = np.argsort(-conf, axis=None, kind="mergesort")
    out: list[tuple[int, int, str, float]] = []
    seen: set[int] = set()
    per_label_cap = max(1, math.ceil(k / max(1, yt.shape[1])))  # first pass: spread the gallery over labels
    for cap in (per_label_cap, k):
        per_label = Counter(j for _, j, _, _ in out)
        for flat in order:
            if len(out) >= k:
                break
            i, j = divmod(int(flat), yt.shape[1])
            if not np.isfinite(conf[i, j]) or i in seen or per_label[j] >= cap:
                continue
            seen.add(i)
            per_label[j] += 1
            out.append((i, j, "false_positive" if fp[i, j] else "false_negative", float(ys[i, j])))
    out.sort(key=lambda t: -conf[t[0], t[1]])
    return out


def _roc_points(y_true: NDArray, y_score: NDArray, *, max_points: int = 200) -> tuple[list[float], list[float]]:
    fpr, tpr, _ = roc_curve(y_true, y_score)
    if fpr.size > max_points:
        keep = np.unique(np.r_[0, np.linspace(0, fpr.size - 1, max_points).round().astype(int), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return [round(float(v), 5) for v in fpr], [round(float(v), 5) for v in tpr]


def _group_results(
    *, variable: str, values: NDArray, order: Sequence[str] | None, yt: NDArray, ys: NDArray, th: NDArray,
    pid: NDArray, labels: Sequence[str], n_boot: int, seed: int,
) -> list[GroupResult]:
    out = []
    present = [str(v) for v in (order if order is not None else sorted({str(v) for v in values}))]
    for g in present:
        rows = np.flatnonzero(values.astype(str) == g)
        if rows.size == 0:
            continue
        boot = bootstrap_metrics(
            y_true=yt[rows], y_score=ys[rows], thresholds=th, patient_ids=pid[rows], labels=labels, n_boot=n_boot,
            seed=seed,
        )
        out.append(GroupResult(
            variable=variable, group=g, n_studies=int(rows.size), n_patients=int(np.unique(pid[rows]).size),
            n_pos={lab: int(np.nansum(yt[rows, j] == 1)) for j, lab in enumerate(labels)},
            small=bool(rows.size < SMALL_GROUP), per_label=boot.per_label, macro=boot.macro,
        ))
    return out


def _default_limitations(
    *, small_groups: list[str], comparator_note: str, has_uncal: bool, n_unknown: int, faithfulness: bool
) -> list[str]:
    items = [
        "Bootstrap intervals resample patients (all studies of a patient together); DeLong tests and DeLong AUROC "
        "intervals assume independent studies and ignore clustering within patients, so they may be too narrow "
        "when patients contribute several studies.",
        "Decision thresholds and recalibration were chosen on the validation split; sensitivity, specificity, PPV "
        "and NPV depend on this split's prevalence and do not transfer to settings with a different prevalence.",
        comparator_note,
        "Thumbnails show pixel data only; text burned into pixels is not removed. Note snippets are scrubbed on a "
        "best-effort basis and may still contain identifying text: review before sharing the report.",
    ]
    if n_unknown:
        items.append(f"{n_unknown} (study, label) pairs with an unknown label were excluded from that label's "
                     "metrics (complete-case analysis per label).")
    if not has_uncal:
        items.append("Uncalibrated probabilities were not supplied, so calibration before recalibration is not shown.")
    if small_groups:
        items.append("Groups with fewer than 30 studies (" + ", ".join(small_groups) + ") have unstable estimates "
                     "and wide intervals; do not draw conclusions from them.")
    if not faithfulness:
        items.append("Explanation faithfulness was not computed for this report.")
    return items


_METHODS = {
    "bootstrap": "95 % percentile intervals from {n_boot} patient-level bootstrap replicates (seed {seed}): patients "
                 "are resampled with replacement, all their studies together, stratified by whether the patient has "
                 "a positive study for the label (per-label metrics) or for any label (macro and micro metrics, one "
                 "joint resample so labels stay paired). Replicates where a metric is undefined (no positives) are "
                 "dropped and counted.",
    "point": "Point estimates from scikit-learn on all evaluated studies: roc_auc_score, average_precision_score "
             "(AUPRC), confusion_matrix at the stored threshold (probability >= threshold is positive), f1_score. "
             "Macro = unweighted mean over labels; micro = all known (study, label) pairs pooled, each at its own "
             "label's threshold.",
    "calibration": "ECE over 15 equal-width bins (sum of bin share x |observed - mean predicted|), Brier score "
                   "(brier_score_loss), calibration slope (unpenalised logistic regression of the outcome on "
                   "logit(p)) and calibration intercept (logistic regression with logit(p) as offset).",
    "delong": "DeLong's test for two correlated ROC curves on the studies with a known label (Sun and Xu fast "
              "algorithm), two-sided; AUROC intervals from DeLong's variance. Verified against R pROC roc.test.",
    "unknown": "Labels recorded as unknown (blank) are excluded per label; a study counts for every label it has.",
}


def compute_validation_report(
    *,
    labels: Sequence[str],
    y_true: ArrayLike,
    y_score: ArrayLike,
    thresholds: ArrayLike,
    patient_ids: ArrayLike,
    y_score_uncalibrated: ArrayLike | None = None,
    subgroups: Mapping[str, ArrayLike] | None = None,
    modality: ArrayLike | None = None,
    comparators: Mapping[str, ArrayLike] | None = None,
    comparator_descriptions: Mapping[str, str] | None = None,
    ingestion_flow: Mapping[str, Any] | None = None,
    model_card: Mapping[str, Any] | None = None,
    faithfulness: Mapping[str, Any] | None = None,
    failure_cases: Sequence[FailureCase] = (),
    limitations: Sequence[str] = (),
    model_name: str = "fused",
    split: str = "test",
    title: str = "clinmm validation report",
    n_boot: int = 2000,
    seed: int = 0,
) -> ValidationReport:
    """Compute every number of the validation report from arrays.

    Args:
        labels: C finding names.
        y_true: (N, C) 1 / 0 / NaN (unknown).
        y_score: (N, C) calibrated probabilities of the evaluated model.
        thresholds: (C,) stored decision thresholds.
        patient_ids: (N,) patient of each study.
        y_score_uncalibrated: (N, C) raw model probabilities (before recalibration), or None.
        subgroups: {variable: (N,) values}, e.g. sex, age_band, site. Blank values form their own group "".
        modality: (N,) one of :data:`MODALITY_GROUPS` per study, or None.
        comparators: {name: (N, C) scores} compared with the model by DeLong (and with each other).
        comparator_descriptions: {name: how the comparator's scores were obtained}.
        ingestion_flow: counts of studies included / excluded by ingestion status.
        model_card: the checkpoint's model card.
        faithfulness: summary from the explanations work, or None ("not computed").
        failure_cases: the confident-error gallery (see :func:`select_confident_errors`).
        limitations: extra limitation statements, appended to the computed ones.
        model_name: how the evaluated model is named in tables.
        split: evaluated split name.
        title: report title.
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
    """
    labels = list(labels)
    yt = np.asarray(y_true, dtype=np.float64)
    ys = np.asarray(y_score, dtype=np.float64)
    th = np.asarray(thresholds, dtype=np.float64).ravel()
    pid = np.asarray(patient_ids).astype(str)
    n, c = yt.shape if yt.ndim == 2 else (-1, -1)
    if yt.ndim != 2 or ys.shape != yt.shape or c != len(labels):
        raise ValueError(f"`y_true` and `y_score` must be (N, {len(labels)}); got {yt.shape} and {ys.shape}.")
    if th.shape != (c,) or pid.shape != (n,):
        raise ValueError(f"`thresholds` must be ({c},) and `patient_ids` ({n},); got {th.shape} and {pid.shape}.")
    if not np.all(np.isfinite(ys)):
        raise ValueError("`y_score` holds NaN or infinite values.")
    known = ~np.isnan(yt)

    boot = bootstrap_metrics(y_true=yt, y_score=ys, thresholds=th, patient_ids=pid, labels=labels, n_boot=n_boot,
                             seed=seed)
    per_label: list[LabelResult] = []
    roc_curves: list[RocCurve] = []
    calibration: list[CalibrationResult] = []
    for j, lab in enumerate(labels):
        rows = known[:, j]
        ytj, ysj = yt[rows, j].astype(int), ys[rows, j]
        both = 0 < ytj.sum() < ytj.size
        pred = ysj >= th[j]
        per_label.append(LabelResult(
            label=lab, n=int(rows.sum()), n_pos=int(ytj.sum()), n_patients=int(np.unique(pid[rows]).size),
            threshold=float(th[j]), metrics=boot.per_label[lab],
            auroc_delong=delong_auc_ci(ytj, ysj) if both else None,
            confusion={"tp": int(np.sum(pred & (ytj == 1))), "fp": int(np.sum(pred & (ytj == 0))),
                       "tn": int(np.sum(~pred & (ytj == 0))), "fn": int(np.sum(~pred & (ytj == 1)))},
        ))
        if both:
            fpr, tpr = _roc_points(ytj, ysj)
            roc_curves.append(RocCurve(label=lab, model=model_name, fpr=fpr, tpr=tpr))
        if ytj.size:
            before = None
            if y_score_uncalibrated is not None:
                before = calibration_summary(ytj, np.asarray(y_score_uncalibrated, dtype=np.float64)[rows, j])
            calibration.append(CalibrationResult(label=lab, before=before, after=calibration_summary(ytj, ysj)))

    complete = known.all(axis=1)
    if complete.any():
        cls_report: dict[str, Any] = classification_report(
            yt[complete].astype(int), (ys[complete] >= th[None, :]).astype(int), target_names=labels,
            output_dict=True, zero_division=0,
        )
    else:
        cls_report = {}
    cls_report["n_complete"] = int(complete.sum())

    comps = dict(comparators or {})
    descriptions = dict(comparator_descriptions or {})
    all_models: dict[str, NDArray] = {model_name: ys}
    for name, sc in comps.items():
        arr = np.asarray(sc, dtype=np.float64)
        if arr.shape != ys.shape:
            raise ValueError(f"comparator {name!r} must be (N, C) = {ys.shape}; got {arr.shape}.")
        all_models[name] = arr
    comparisons: list[Comparison] = []
    comparator_auroc: dict[str, dict[str, ConfidenceInterval]] = {}
    names = list(all_models)
    for name in names[1:]:
        comparator_auroc[name] = {}
    for j, lab in enumerate(labels):
        rows = known[:, j]
        ytj = yt[rows, j].astype(int)
        both = 0 < ytj.sum() < ytj.size
        for name in names[1:]:
            if both:
                comparator_auroc[name][lab] = delong_auc_ci(ytj, all_models[name][rows, j])
                fpr, tpr = _roc_points(ytj, all_models[name][rows, j])
                roc_curves.append(RocCurve(label=lab, model=name, fpr=fpr, tpr=tpr))
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                if not both:
                    comparisons.append(Comparison(label=lab, model_a=names[a], model_b=names[b], result=None,
                                                  note="label has no positives or no negatives"))
                    continue
                res = delong_roc_test(ytj, all_models[names[a]][rows, j], all_models[names[b]][rows, j])
                comparisons.append(Comparison(label=lab, model_a=names[a], model_b=names[b], result=res))

    by_modality: list[GroupResult] = []
    if modality is not None:
        mod = np.asarray(modality).astype(str)
        unknown_groups = sorted(set(mod.tolist()) - set(MODALITY_GROUPS))
        if unknown_groups:
            raise ValueError(f"`modality` values must be in {MODALITY_GROUPS}; got {unknown_groups}.")
        by_modality = _group_results(variable="modality", values=mod, order=[g for g in MODALITY_GROUPS
                                                                           if g in set(mod.tolist())],
                                     yt=yt, ys=ys, th=th, pid=pid, labels=labels, n_boot=n_boot, seed=seed)
    groups: list[GroupResult] = []
    for var, vals in (subgroups or {}).items():
        arr = np.asarray(vals).astype(str)
        if arr.shape != (n,):
            raise ValueError(f"subgroup {var!r} must be ({n},); got {arr.shape}.")
        groups.extend(_group_results(variable=var, values=arr, order=None, yt=yt, ys=ys, th=th, pid=pid,
                                     labels=labels, n_boot=n_boot, seed=seed))

    small = [f"{g.variable}={g.group or '(blank)'} (n={g.n_studies})" for g in by_modality + groups if g.small]
    comparator_note = (
        "Comparators: " + "; ".join(f"{k}: {v}" for k, v in descriptions.items()) + "." if descriptions else
        "No comparator models were evaluated." if not comps else
        "Comparators: " + ", ".join(comps) + "."
    )
    limits = _default_limitations(
        small_groups=small, comparator_note=comparator_note, has_uncal=y_score_uncalibrated is not None,
        n_unknown=int((~known).sum()), faithfulness=faithfulness is not None,
    ) + list(limitations)
    methods = {k: v.format(n_boot=n_boot, seed=seed) for k, v in _METHODS.items()}
    return ValidationReport(
        title=title,
        created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        labels=labels,
        model_name=model_name,
        n_studies=int(n),
        n_patients=int(np.unique(pid).size),
        split=split,
        model_card=dict(model_card or {}),
        ingestion_flow=dict(ingestion_flow or {}),
        per_label=per_label,
        macro=boot.macro,
        micro=boot.micro,
        classification_report=cls_report,
        calibration=calibration,
        comparators={k: descriptions.get(k, "") for k in comps},
        comparisons=comparisons,
        comparator_auroc=comparator_auroc,
        by_modality=by_modality,
        subgroups=groups,
        faithfulness=dict(faithfulness) if faithfulness is not None else None,
        failure_cases=list(failure_cases),
        roc_curves=roc_curves,
        limitations=limits,
        methods=methods,
        n_boot=int(n_boot),
        seed=int(seed),
    )


# ----------------------------------------------------------------------------------------------------------------
# Layer 2: checkpoint + manifest -> HTML
# ----------------------------------------------------------------------------------------------------------------


def _thumbnail_png(display: NDArray, *, size: int = 160) -> str:
    """Base64 PNG of a display image in [0, 1] (H, W), down-sampled so the longer side is ``size`` pixels."""
    from PIL import Image

    arr = np.clip(np.asarray(display, dtype=np.float32), 0.0, 1.0)
    img = Image.fromarray((arr * 255).astype(np.uint8), mode="L")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def build_report(
    model_dir: str | Path,
    manifest: str | Path,
    *,
    split: str = "test",
    out: str | Path,
    compare: Sequence[str | Path] = (),
    pdf: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    device: str = "cpu",
    faithfulness: Mapping[str, Any] | str | Path | None = None,
) -> Path:
    """Run a checkpoint over a manifest split and write the self-contained HTML report (and a JSON beside it).

    Args:
        model_dir: checkpoint directory.
        manifest: labelled manifest (CSV / Parquet).
        split: split to evaluate.
        out: HTML file to write; ``<out>.json`` holds the :class:`ValidationReport`.
        compare: further checkpoints compared by DeLong.
        pdf: also print ``<out>.pdf`` through headless Chromium.
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        device: torch device for inference.
        faithfulness: explanation faithfulness summary (the dict of
            :func:`clinmm.explain.faithfulness.evaluate_faithfulness`, or a JSON file holding it), if computed.

    Returns:
        The HTML path.
    """
    from clinmm.report._runner import run_split  # heavy imports (torch) only here

    out = Path(out)
    if faithfulness is not None and not isinstance(faithfulness, Mapping):
        from clinmm.errors import ClinmmError

        try:
            faithfulness = json.loads(Path(faithfulness).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ClinmmError(f"{faithfulness}: cannot read the faithfulness JSON: {err}") from err
    t0 = time.perf_counter()
    data = run_split(model_dir, manifest, split=split, compare=tuple(Path(p) for p in compare), device=device)
    t1 = time.perf_counter()
    report = compute_validation_report(
        labels=data.labels, y_true=data.y_true, y_score=data.y_score, thresholds=data.thresholds,
        patient_ids=data.patient_ids, y_score_uncalibrated=data.y_score_uncalibrated, subgroups=data.subgroups,
        modality=data.modality, comparators=data.comparators, comparator_descriptions=data.comparator_descriptions,
        ingestion_flow=data.ingestion_flow, model_card=data.model_card, faithfulness=faithfulness,
        failure_cases=[], limitations=data.limitations, split=split, n_boot=n_boot, seed=seed,
    )
    errors = select_confident_errors(y_true=data.y_true, y_score=data.y_score, thresholds=data.thresholds,
                                     labels=data.labels)
    report.failure_cases = [data.failure_case(i, j, kind) for i, j, kind, _ in errors]
    t2 = time.perf_counter()
    from clinmm.report.render import print_pdf, render_html

    out.parent.mkdir(parents=True, exist_ok=True)
    render_html(report, out)
    report.save_json(out.with_suffix(".json"))
    t3 = time.perf_counter()
    if pdf:
        print_pdf(out, out.with_suffix(".pdf"))
    logger.info("validation report written to %s: inference %.1fs, statistics + gallery %.1fs, render %.1fs%s", out,
                t1 - t0, t2 - t1, t3 - t2, f", pdf {time.perf_counter() - t3:.1f}s" if pdf else "")
    return out
