"""``clinmm compare``: the fusion ablation — every fusion method trained on the same split with the same budget.

For each method (``cross_attention``, ``concat``, ``gated``, ``image_only``, ``text_only``) a model is trained from
the same seed, on the same prepared samples, for the same number of epochs (and the same wall-time cap), then scored
on the test split three ways: full input, all notes removed, all images removed. The report gives per-label test
AUROC, the paired patient-level bootstrap of (fused − best single-modality model) per label with its one-sided 95 %
lower bound, and the missing-modality deltas — the acceptance checks of issue 6 — as JSON and a Markdown table.

On CPU the text encoder can be frozen and its features cached once (``cache_text=True``); every method then shares
the same frozen MiniLM features (stated in the output).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clinmm.config import ClinmmConfig, config_to_dict
from clinmm.data.manifest import read_manifest
from clinmm.inference import resolve_device
from clinmm.metrics import known_auroc, patient_bootstrap_weights, rank_auroc
from clinmm.models.fusion import FUSION_METHODS
from clinmm.train import fit, load_init_weights, predict_logits, prepare_samples, seed_everything
from clinmm.training.stacking import fit_head_stack
from clinmm.training.text_warmup import warm_up_text_encoder

__all__ = [
    "BOTH_LABELS",
    "IMAGE_LABELS",
    "TEXT_LABELS",
    "CompareResult",
    "acceptance_checks",
    "check_rows",
    "compare",
    "paired_bootstrap_delta",
    "render_markdown",
]

logger = logging.getLogger(__name__)

# Which modality carries each synthetic finding (docs/dev/contracts.md).
IMAGE_LABELS = ("nodule", "consolidation")
TEXT_LABELS = ("fever", "dyspnea")
BOTH_LABELS = ("pneumonia",)


@dataclass
class CompareResult:
    """Everything ``compare`` measured (``as_dict`` is what ``results.json`` holds)."""

    labels: list[str]
    methods: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    setup: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"labels": self.labels, "methods": self.methods, "checks": self.checks, "setup": self.setup}


def paired_bootstrap_delta(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, patient_ids: np.ndarray, *,
                           n_boot: int = 2000, seed: int = 0) -> dict:
    """AUROC(a) − AUROC(b) on the same studies, with a patient-level paired bootstrap (stratified by label).

    Args:
        y_true: (n,) 1 / 0 / NaN.
        score_a: (n,) scores of model a, or (S, n): the scores of S models of method a (e.g. one per training seed),
            whose AUROCs are averaged — every replicate resamples the same patients for all of them.
        score_b: (n,) or (S', n) scores of model(s) b, likewise.
        patient_ids: (n,) patient of each study (resampled as a unit).
        n_boot: replicates.
        seed: bootstrap seed.

    Returns:
        ``delta`` (point), ``lower_95_one_sided`` (5th percentile), ``ci95`` (2.5th, 97.5th), ``n``. With several
        models per side the interval covers the test sample's uncertainty about the mean over those models, not the
        spread of a further training seed.
    """
    known = ~np.isnan(y_true)
    y = y_true[known].astype(int)
    a = np.atleast_2d(np.asarray(score_a))[:, known]  # (S, n)
    b = np.atleast_2d(np.asarray(score_b))[:, known]  # (S', n)
    pid = np.asarray(patient_ids)[known]
    nan = float("nan")
    if len(np.unique(y)) < 2:  # AUROC undefined on this split
        return {"delta": nan, "lower_95_one_sided": nan, "ci95": [nan, nan], "n": int(known.sum()), "n_boot": 0}
    # Stratum: does the patient have any positive study (constant within a patient, as the bootstrap requires).
    pos_patients = set(pid[y == 1])
    strata = np.array([p in pos_patients for p in pid])
    w = patient_bootstrap_weights(pid, strata, n_boot=n_boot, rng=np.random.default_rng(seed))  # (R, n)
    ra = np.mean([rank_auroc(y, row, w) for row in a], axis=0)  # (R,)
    rb = np.mean([rank_auroc(y, row, w) for row in b], axis=0)  # (R,)
    diff = ra - rb
    diff = diff[~np.isnan(diff)]  # replicates that drew one class only are dropped
    point = float(np.mean([rank_auroc(y, row) for row in a]) - np.mean([rank_auroc(y, row) for row in b]))
    if diff.size == 0:
        return {"delta": point, "lower_95_one_sided": nan, "ci95": [nan, nan], "n": int(known.sum()), "n_boot": 0}
    return {"delta": point, "lower_95_one_sided": float(np.percentile(diff, 5)),
            "ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))], "n": int(known.sum()),
            "n_boot": int(diff.size)}


def compare(manifest_path: str | Path, out: str | Path, *, config: ClinmmConfig,
            methods: tuple[str, ...] = FUSION_METHODS, cache_text: bool = True, max_train: int | None = None,
            n_boot: int = 2000, progress: bool = True, init_from: str | Path | None = None,
            max_val: int | None = None, text_cache_file: str | Path | None = None) -> CompareResult:
    """Train every method in ``methods`` on the same data and budget; evaluate on ``test``; write ``out/``.

    Args:
        manifest_path: manifest with train / val / test splits.
        out: folder for ``results.json``, ``ablation.md`` and ``predictions_<method>.npz``.
        config: base configuration (``fusion.method`` is replaced per method; epochs, seed and
            ``train.max_train_seconds`` are the shared budget).
        methods: fusion methods to train.
        cache_text: freeze the whole text encoder and cache its features (CPU budgets); False fine-tunes it as
            configured.
        max_train: use only the first ``max_train`` training studies (None: all), e.g. for a smoke run.
        n_boot: bootstrap replicates.
        progress: tqdm bars on stderr.
        init_from: a ``clinmm pretrain-contrastive`` directory to initialise every model from (what exists of it).
        max_val: use only the first ``max_val`` validation studies (the test split is always used whole).
        text_cache_file: safetensors file to reuse / store the frozen text features
            (see ``clinmm.models.text_cache.FrozenTextCache``).
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.train.device)
    manifest = read_manifest(manifest_path, labels=config.data.labels or None)
    labels = manifest.labels
    config = copy.deepcopy(config)
    config.data.labels = labels
    patient = {r.study_id: r.patient_id for r in manifest.records}

    from clinmm.models.text import TextEncoder

    text_encoder = TextEncoder.from_config(config.text)
    if cache_text:
        text_encoder.freeze_layers(len(text_encoder._layers()))
    tokenizer = text_encoder.note_tokenizer()
    samples, counts, pad_id = prepare_samples(manifest, None, config, splits=("train", "val", "test"),
                                              tokenizer=tokenizer, limits={"train": max_train, "val": max_val})
    t_prep = time.perf_counter() - t0
    logger.info("compare: prepared %s studies in %.0fs", {k: len(v) for k, v in samples.items()}, t_prep)
    t_cache = 0.0
    shared_cache = None
    warmup = None
    reads_notes = any(m != "image_only" for m in methods)  # an image-only run needs no warm-up or note features
    if config.text.warmup_epochs > 0 and cache_text and reads_notes:
        # the text warm-up prepares the shared encoder once: the text_only and fused models read the same features
        warmup = warm_up_text_encoder(text_encoder, samples["train"], samples["val"], config=config, device=device)
    if cache_text and reads_notes:  # one encoding pass for every method: they share the frozen encoder and its cache
        from clinmm.models.text_cache import FrozenTextCache, encoder_fingerprint

        tc = time.perf_counter()
        shared_cache = FrozenTextCache(max_bytes=None)
        tag = encoder_fingerprint(text_encoder) if text_cache_file else ""
        if text_cache_file:
            shared_cache.load(text_cache_file, tag=tag)
        notes = [s.note for split in ("train", "val", "test") for s in samples[split]]
        if shared_cache.fill(text_encoder.to(device), notes, pad_id=pad_id) and text_cache_file:
            shared_cache.save(text_cache_file, tag=tag)
        t_cache = time.perf_counter() - tc
    test = samples["test"]
    y_test = np.stack([s.labels for s in test])
    pids = np.array([patient.get(s.key, s.key) for s in test])
    result = CompareResult(labels=labels)
    result.setup = {"manifest": str(Path(manifest_path).name), "n": {k: len(v) for k, v in samples.items()},
                    "skipped": counts, "epochs": config.train.epochs, "seed": config.train.seed,
                    "max_train_seconds": config.train.max_train_seconds, "batch_size": config.train.batch_size,
                    "image_size": config.data.image_size, "backbone": config.image.backbone,
                    "text_encoder": "frozen, cached features" if cache_text else "fine-tuned as configured",
                    "device": str(device), "torch_threads": torch.get_num_threads(),
                    "seconds_prepare": round(t_prep, 1), "seconds_text_cache": round(t_cache, 1),
                    "text_warmup": warmup.to_dict() if warmup is not None else None,
                    "n_boot": n_boot, "init_from": str(init_from) if init_from else None,
                    "config": config_to_dict(config)}
    for method in methods:
        cfg = copy.deepcopy(config)
        cfg.fusion.method = method
        seed_everything(cfg.train.seed)
        # a fine-tuned encoder changes during training: each method starts from its own copy of the same weights
        encoder = text_encoder if cache_text else copy.deepcopy(text_encoder)
        model = build_model_with_text(cfg, labels, encoder, text_cache=shared_cache)
        if init_from is not None:
            load_init_weights(model, init_from, allow_missing_prefixes=True)
        model.to(device)
        tm = time.perf_counter()
        fitted = fit(model, samples["train"], samples["val"], config=cfg, device=device, pad_id=pad_id,
                     progress=progress)
        model.load_state_dict(fitted.best_state)
        if model.head_stack is not None:  # as `clinmm train` does: the stack is fitted on validation after training
            fit_head_stack(model, samples["val"], image_size=cfg.data.image_size, pad_id=pad_id, device=device)
        seconds = time.perf_counter() - tm
        preds = {}
        for mode, kw in (("full", {}), ("no_text", {"drop_text": True}), ("no_image", {"drop_image": True})):
            preds[mode] = predict_logits(model, test, image_size=cfg.data.image_size, pad_id=pad_id, device=device,
                                         **kw)
        np.savez_compressed(out / f"predictions_{method}.npz", y=y_test, patient=pids, **preds)
        aurocs = {mode: {lab: known_auroc(y_test[:, c], p[:, c]) for c, lab in enumerate(labels)}
                  for mode, p in preds.items()}
        result.methods[method] = {"test_auroc": aurocs["full"], "test_auroc_no_text": aurocs["no_text"],
                                  "test_auroc_no_image": aurocs["no_image"], "train_seconds": round(seconds, 1),
                                  "epochs_run": len(fitted.history), "best_epoch": fitted.best_epoch,
                                  "val_macro_auroc": fitted.best_auroc}
        logger.info("compare: %s done in %.0fs: %s", method, seconds,
                    {k: round(v, 3) for k, v in aurocs["full"].items()})
        if method == "cross_attention":
            _save_fused(out, model, cfg, labels, fitted)
        result.checks = _checks(result, labels, out, n_boot=n_boot, seed=config.train.seed)
        _write(out, result, labels)
    result.checks = _checks(result, labels, out, n_boot=n_boot, seed=config.train.seed)
    result.setup["seconds_total"] = round(time.perf_counter() - t0, 1)
    _write(out, result, labels)
    return result


def build_model_with_text(cfg: ClinmmConfig, labels: list[str], text_encoder, *, text_cache=None):
    """A :class:`ClinmmModel` that reuses an existing text encoder (and its feature cache) instead of loading one."""
    from clinmm.models.classifier import ClinmmModel

    return ClinmmModel(config=cfg, labels=labels, text_encoder=text_encoder if cfg.fusion.method != "image_only"
                       else None, text_cache=text_cache)


def _save_fused(out: Path, model, cfg: ClinmmConfig, labels: list[str], fitted) -> None:
    """Write the fused model as a normal checkpoint."""
    from clinmm.calibration import fit_calibration
    from clinmm.checkpoint import save_checkpoint

    save_checkpoint(out / "cross_attention_ckpt", model=model.cpu(), config=cfg, labels=labels,
                    calibration=fit_calibration(np.zeros((0, len(labels))), np.zeros((0, len(labels)))),
                    scope={"modalities": cfg.data.modalities}, model_card={"name": "compare cross_attention",
                                                                          "note": "uncalibrated ablation model"},
                    reference={}, extra_files={"history.json": json.dumps(fitted.history, default=float)})


def _checks(result: CompareResult, labels: list[str], out: Path, *, n_boot: int, seed: int) -> dict:
    if not {"cross_attention", "image_only", "text_only"} <= set(result.methods):
        return {}
    scores = {}
    for k in ("cross_attention", "image_only", "text_only"):
        with np.load(out / f"predictions_{k}.npz") as z:
            scores[k] = {mode: z[mode][None] for mode in ("full", "no_text", "no_image")}  # (1, n, C)
            y, pids = z["y"], z["patient"]
    return acceptance_checks(labels, scores, result.methods, y, pids, n_boot=n_boot, seed=seed)


def acceptance_checks(labels: list[str], scores: dict[str, dict[str, np.ndarray]], aurocs: dict[str, dict],
                      y: np.ndarray, pids: np.ndarray, *, n_boot: int, seed: int) -> dict[str, dict]:
    """The issue-6 checks: fused vs the best single-modality model per label, and the missing-modality deltas.

    Args:
        labels: label names (C).
        scores: ``scores[method][mode]`` (S, n, C) test scores of S models (seeds) of cross_attention, image_only
            and text_only, modes ``full``, ``no_text``, ``no_image``; with S > 1 the checks are on the mean AUROC.
        aurocs: ``aurocs[method]["test_auroc" | "test_auroc_no_text" | "test_auroc_no_image"][label]``: the
            (seed-mean) AUROC, a float; it picks the best single model and gives the missing-modality deltas.
        y: (n, C) labels (NaN unknown); pids: (n,) patients.
        n_boot, seed: paired patient-level bootstrap.
    """
    checks: dict[str, dict] = {}
    for c, lab in enumerate(labels):
        best = max(("image_only", "text_only"), key=lambda k: -1.0 if np.isnan(aurocs[k]["test_auroc"][lab])
                   else aurocs[k]["test_auroc"][lab])
        boot = paired_bootstrap_delta(y[:, c], scores["cross_attention"]["full"][:, :, c],
                                      scores[best]["full"][:, :, c], pids, n_boot=n_boot, seed=seed)
        entry = {"best_single": best, **boot}
        if lab in BOTH_LABELS:
            entry["criterion"], entry["pass"] = "delta >= 0.05", bool(boot["delta"] >= 0.05)
        else:
            entry["criterion"] = "one-sided 95% lower bound >= -0.02"
            entry["pass"] = bool(boot["lower_95_one_sided"] >= -0.02)
        checks[f"fused_vs_single:{lab}"] = entry
    fa = aurocs["cross_attention"]
    for lab in labels:
        for group, mode, key in ((IMAGE_LABELS, "no_text", "notes_removed"),
                                 (TEXT_LABELS, "no_image", "images_removed")):
            if lab in group:
                full, dropped = fa["test_auroc"][lab], fa[f"test_auroc_{mode}"][lab]
                checks[f"{key}:{lab}"] = {"full": full, mode: dropped, "delta": dropped - full,
                                          "criterion": "|delta| <= 0.02 (or better)",
                                          "pass": bool(dropped - full >= -0.02)}
    return checks


def render_markdown(result: CompareResult) -> str:
    """The ablation table and checks as Markdown."""
    labels = result.labels
    lines = ["| method | " + " | ".join(labels) + " | macro | train s | epochs |",
             "|---|" + "---|" * (len(labels) + 3)]
    for method, r in result.methods.items():
        vals = [r["test_auroc"][lab] for lab in labels]
        macro = np.nanmean(vals)
        lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {macro:.3f} | "
                     f"{r['train_seconds']:.0f} | {r['epochs_run']} |")
    if "cross_attention" in result.methods:
        fa = result.methods["cross_attention"]
        for mode, title in (("test_auroc_no_text", "cross_attention, notes removed"),
                            ("test_auroc_no_image", "cross_attention, images removed")):
            vals = [fa[mode][lab] for lab in labels]
            lines.append(f"| {title} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.nanmean(vals):.3f} | | |")
    if result.checks:
        lines += ["", "| check | value | criterion | pass |", "|---|---|---|---|", *check_rows(result.checks)]
    return "\n".join(lines) + "\n"


def check_rows(checks: dict[str, dict]) -> list[str]:
    """Markdown table rows (check | value | criterion | pass) for the checks of :func:`compare`."""
    rows = []
    for name, c in checks.items():
        if name.startswith("fused_vs_single"):
            value = (f"Δ {c['delta']:+.3f} vs {c['best_single']} (one-sided 95 % lower bound "
                     f"{c['lower_95_one_sided']:+.3f}, n={c['n']})")
        else:
            value = f"Δ {c['delta']:+.3f} ({c['full']:.3f} → {c.get('no_text', c.get('no_image')):.3f})"
        criterion = c["criterion"].replace("|", "\\|")  # "|delta|" must not end the table cell
        rows.append(f"| {name} | {value} | {criterion} | {'PASS' if c['pass'] else 'FAIL'} |")
    return rows


def _write(out: Path, result: CompareResult, labels: list[str]) -> None:
    (out / "results.json").write_text(json.dumps(result.as_dict(), indent=2, default=float), encoding="utf-8")
    (out / "ablation.md").write_text(render_markdown(result), encoding="utf-8")
