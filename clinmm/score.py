"""Batch scoring of DICOM archives: ``clinmm score INPUT --model CKPT --out DIR``.

INPUT is a folder tree of DICOM files (any nesting, files without extension), grouped into studies by
StudyInstanceUID read from headers (:mod:`clinmm.scoring.discover`), or a manifest (CSV/Parquet). Studies are decoded
in DataLoader worker processes and scored in deterministic, length-bucketed batches (:mod:`clinmm.scoring.pipeline`);
results go to atomic shards, then to the output folder (:mod:`clinmm.scoring.outputs`)::

    DIR/predictions.parquet, predictions.csv   one row per study (columns: docs/dev/contracts.md)
    DIR/errors.csv                             every file not ok and every study not scored (no PHI)
    DIR/drift.json                             score and input drift against the checkpoint's reference
    DIR/run.json                               command, counts, timings (the only file with timestamps)
    DIR/explanations/<study_key>.json          with ``explain``: raw per-label attention (image grid, note tokens)
    DIR/sr/<study_key>.dcm                     with ``sr``: DICOM Comprehensive SR, TID 1500 (clinmm.io.sr)
    DIR/shards/shard-NNNNN/                    finished shards (resume state)

Rerunning the same command skips finished shards, recomputes an unfinished one whole, and ends with the same bytes in
every file but ``run.json``. Exit code (``ScoreSummary.exit_code``): 0 when every file is ``ok`` and every study was
scored, 3 otherwise; usage errors raise :class:`~clinmm.errors.ClinmmError` (the CLI turns them into exit code 2).

Example::

    from clinmm.score import ScoreOptions, score
    summary = score("pacs_export/", "runs/demo/checkpoint", "runs/demo/scores",
                    options=ScoreOptions(workers=8, sr=True))
    summary.exit_code, summary.as_dict()
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from clinmm.errors import ConfigError

__all__ = ["ScoreOptions", "ScoreSummary", "ScoreContext", "score", "prepare_context", "study_row", "EXIT_OK",
           "EXIT_USAGE", "EXIT_INCOMPLETE"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
_MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass
class ScoreOptions:
    """Options of :func:`score` (``None`` = the default of :class:`clinmm.config.ScoreConfig`).

    Args:
        notes: notes CSV (``study_instance_uid, accession_number, note_text``) joined by StudyInstanceUID, else
            AccessionNumber.
        explain: write ``explanations/`` (raw per-label attention).
        sr: write one DICOM Comprehensive SR (TID 1500) per scored study with an image.
        engine: ``local`` or ``ray``.
        batch_size: studies per model batch.
        workers: decode worker processes (0 = decode in this process).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        force_scope: score studies outside the checkpoint's scope too.
        salt_file: the installation's study-key salt file (created when absent); None = the per-user default.
        shard_size: studies per shard (resume granularity).
        chunk_size: studies per decode task sent to a worker.
        max_file_bytes: ingestion bound per file.
        max_pixels: ingestion bound per file.
        progress: show a progress bar (studies/s, ETA) on stderr.
        command: the command line, recorded in ``run.json``.
        ray_address: Ray cluster address for ``engine="ray"`` (None = start / join a local instance).
        split: with a manifest INPUT, score only the rows of this split (e.g. ``test``); None = every row.
    """

    notes: Path | None = None
    explain: bool = False
    sr: bool = False
    engine: str = "local"
    batch_size: int | None = None
    workers: int | None = None
    device: str | None = None
    force_scope: bool = False
    salt_file: Path | None = None
    shard_size: int | None = None
    chunk_size: int = 8
    max_file_bytes: int | None = None
    max_pixels: int | None = None
    progress: bool = False
    command: str | None = None
    ray_address: str | None = None
    split: str | None = None


@dataclass
class ScoreSummary:
    """What a scoring run did.

    Args:
        out: output directory.
        studies: studies found.
        scored: studies scored.
        not_scored: studies not scored (out of scope, nothing usable).
        files: files seen.
        files_ok: files with status ``ok``.
        errors: rows in errors.csv.
        shards: shards in total.
        shards_reused: finished shards skipped (resume).
        elapsed_s: wall time of this run.
        studies_per_s: studies computed in this run / time spent computing them.
        drift_score: overall drift (max PSI), or None.
        exit_code: 0 all ok, 3 something not ok.
    """

    out: Path
    studies: int = 0
    scored: int = 0
    not_scored: int = 0
    files: int = 0
    files_ok: int = 0
    errors: int = 0
    shards: int = 0
    shards_reused: int = 0
    elapsed_s: float = 0.0
    studies_per_s: float = 0.0
    drift_score: float | None = None
    exit_code: int = EXIT_OK

    def as_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@dataclass
class ScoreContext:
    """Everything a scoring engine needs (built once by :func:`prepare_context`)."""

    input: Path
    input_root: Path
    out: Path
    options: ScoreOptions
    predictor: object
    salt: bytes
    inventory: object
    scope: object
    shard_size: int
    batch_size: int
    workers: int
    max_file_bytes: int
    max_pixels: int
    clinmm_version: str
    labels: list[str] = field(default_factory=list)
    file_timeout_s: float = 30.0
    checker: object = None  # clinmm.scoring.study_check.StudyChecker: the per-study "unlike training" column

    @property
    def n_shards(self) -> int:
        return max(1, math.ceil(len(self.inventory.studies) / self.shard_size)) if self.inventory.studies else 0

    def shard_studies(self, index: int) -> list:
        return self.inventory.studies[index * self.shard_size : (index + 1) * self.shard_size]

    def builder(self):
        return self.predictor.builder


def _defaults():
    from clinmm.config import ScoreConfig

    return ScoreConfig()


def prepare_context(input: str | os.PathLike[str], model: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    options: ScoreOptions) -> ScoreContext:
    """Validate arguments, load the checkpoint and list the studies (usage errors raise :class:`ClinmmError`)."""
    from clinmm.inference import Predictor, load_checkpoint, resolve_device
    from clinmm.io.keys import default_salt_path, load_or_create_salt
    from clinmm.io.provenance import versions
    from clinmm.scoring.discover import discover_folder, discover_manifest, read_notes
    from clinmm.scoring.study_check import ScopeRule, StudyChecker

    cfg = _defaults()
    input, out = Path(input), Path(out)
    if options.engine not in ("local", "ray"):
        raise ConfigError(f"--engine: expected 'local' or 'ray', got {options.engine!r}")
    if not input.exists():
        raise ConfigError(f"{input}: input not found")
    batch_size = options.batch_size if options.batch_size is not None else cfg.batch_size
    workers = options.workers if options.workers is not None else cfg.workers
    shard_size = options.shard_size if options.shard_size is not None else cfg.shard_size
    if batch_size < 1 or workers < 0 or shard_size < 1 or options.chunk_size < 1:
        raise ConfigError(f"batch_size ({batch_size}) and shard_size ({shard_size}) must be ≥ 1, workers ({workers}) "
                          "≥ 0")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: output exists and is not a folder")
    try:
        device = resolve_device(options.device or cfg.device)
    except RuntimeError as err:
        raise ConfigError(f"--device {options.device!r}: {err}") from err
    max_file_bytes = options.max_file_bytes or cfg.max_file_bytes
    max_pixels = options.max_pixels or cfg.max_pixels
    loaded = load_checkpoint(model, device=device)
    predictor = Predictor(loaded, max_file_bytes=max_file_bytes, max_pixels=max_pixels)
    salt = load_or_create_salt(options.salt_file or default_salt_path())
    notes = read_notes(options.notes) if options.notes else None
    is_manifest = input.is_file() and input.suffix.lower() in _MANIFEST_SUFFIXES
    if input.is_file() and not is_manifest:
        raise ConfigError(f"{input}: a file INPUT must be a manifest (.csv or .parquet); give a folder for DICOM files")
    scan_workers = min(workers, os.cpu_count() or 1)
    if is_manifest:
        inventory = discover_manifest(input, salt=salt, notes=notes, workers=scan_workers,
                                      max_file_bytes=max_file_bytes, deadline_s=cfg.file_timeout_s,
                                      split=options.split)
        root = input.parent
    else:
        if options.split is not None:
            raise ConfigError(f"--split {options.split!r}: only a manifest INPUT has splits; {input} is a folder")
        inventory = discover_folder(input, salt=salt, notes=notes, workers=scan_workers,
                                    max_file_bytes=max_file_bytes, deadline_s=cfg.file_timeout_s)
        root = input
    return ScoreContext(input=input, input_root=root, out=out, options=options, predictor=predictor, salt=salt,
                        inventory=inventory, scope=ScopeRule.from_checkpoint(loaded.scope, force=options.force_scope),
                        shard_size=shard_size, batch_size=batch_size, workers=workers, max_file_bytes=max_file_bytes,
                        max_pixels=max_pixels, clinmm_version=versions()[0], labels=list(loaded.labels),
                        file_timeout_s=cfg.file_timeout_s,
                        checker=StudyChecker(scope=loaded.scope, reference=loaded.reference))


def _shard_fingerprint(ctx: ScoreContext, index: int) -> str:
    from clinmm.scoring.outputs import fingerprint

    loaded = ctx.predictor.loaded
    studies = [[s.key, s.source_path, s.study_id, [(f.rel, f.status) for f in s.files],
                None if s.note is None else fingerprint(s.note)] for s in ctx.shard_studies(index)]
    return fingerprint({"model": loaded.sha256, "preprocessing": loaded.preprocessing_hash,
                        "clinmm": ctx.clinmm_version, "batch_size": ctx.batch_size, "shard_size": ctx.shard_size,
                        "explain": ctx.options.explain, "sr": ctx.options.sr, "force_scope": ctx.options.force_scope,
                        "device": str(loaded.device.type), "studies": studies})


def _columns(ctx: ScoreContext) -> tuple[list[str], dict[str, str]]:
    cols: list[tuple[str, str]] = [("study_key", "str")]
    if ctx.inventory.from_manifest:
        cols.append(("study_id", "str"))
    cols += [("source_path", "str"), ("status", "str"), ("detail", "str"), ("scope", "str"),
             ("unlike_training", "str"), ("modality", "str"), ("image_present", "bool"), ("note_present", "bool")]
    cols += [(f"prob_{lab}", "float") for lab in ctx.labels]
    cols += [(f"decision_{lab}", "int") for lab in ctx.labels]
    cols += [("n_files", "int"), ("n_files_ok", "int"), ("model_sha256", "str"), ("clinmm_version", "str"),
             ("preprocessing_hash", "str"), ("provenance", "str")]
    return [c for c, _ in cols], dict(cols)


def study_row(ctx: ScoreContext, decoded, prediction) -> dict:
    """One ``predictions`` row (plain JSON types) for a decoded study and its prediction (None if not scored)."""
    loaded = ctx.predictor.loaded
    s = decoded.study
    row: dict = {"study_key": s.key}
    if ctx.inventory.from_manifest:
        row["study_id"] = s.study_id
    unlike = ""
    if prediction is not None and prediction.image_present and decoded.sample is not None and ctx.checker is not None:
        unlike = ";".join(ctx.checker(decoded.sample).codes)  # e.g. "intensity:p95;grid:rows"
    row.update(source_path=s.source_path, status=decoded.status, detail=decoded.detail, scope=decoded.scope,
               unlike_training=unlike, modality=decoded.modality)
    if prediction is not None:
        row["image_present"] = bool(prediction.image_present)
        row["note_present"] = bool(prediction.text_present)
        for c, lab in enumerate(ctx.labels):
            row[f"prob_{lab}"] = float(prediction.probs[c])
        for c, lab in enumerate(ctx.labels):
            row[f"decision_{lab}"] = int(bool(prediction.decisions[c]))
    else:
        row["image_present"] = False
        row["note_present"] = bool(s.note and s.note.strip())
        for lab in ctx.labels:
            row[f"prob_{lab}"] = None
        for lab in ctx.labels:
            row[f"decision_{lab}"] = None
    row["n_files"] = len(decoded.files)
    row["n_files_ok"] = sum(1 for f in decoded.files if f.status == "ok")
    row["model_sha256"] = loaded.sha256
    row["clinmm_version"] = ctx.clinmm_version
    row["preprocessing_hash"] = loaded.preprocessing_hash
    row["provenance"] = json.dumps(decoded.provenance, sort_keys=True) if decoded.provenance is not None else ""
    return row


def _error_rows(decoded) -> list[dict]:
    rows = [{"path": f.rel, "status": f.status, "detail": f.detail, "message": f.message}
            for f in decoded.files if f.status != "ok"]
    if decoded.sample is None:
        message = ("study outside the model's scope (not scored; --force-scope scores it)"
                   if decoded.status == "out_of_scope" else "study not scored: no usable image and no note")
        rows.append({"path": decoded.study.source_path or f"study:{decoded.study.key}", "status": decoded.status,
                     "detail": decoded.detail, "message": message})
    return rows


def _round_list(a: np.ndarray, nd: int = 6) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def _write_explanation(ctx: ScoreContext, decoded, pred) -> None:
    """Raw attention and token relevance arrays as JSON (deterministic) plus ``clinmm.explain``'s per-label summary
    of the relevance (no note text)."""
    from clinmm.scoring.outputs import atomic_write_text

    sample = decoded.sample
    doc = {
        "study_key": decoded.study.key, "labels": ctx.labels, "kind": "cross_attention_raw",
        "probs": _round_list(pred.probs), "image_present": bool(pred.image_present),
        "note_present": bool(pred.text_present),
        "modality_share": None if pred.modality_share is None else _round_list(pred.modality_share),
        "image_attention": None if pred.image_attention is None else _round_list(pred.image_attention),
        "image_grid": None if pred.image_attention is None else list(pred.image_attention.shape[1:]),
        "letterbox": sample.letterbox.to_dict() if sample.letterbox is not None else None,
        "text_attention": None if pred.text_attention is None else _round_list(pred.text_attention),
        "text_spans": None if pred.text_spans is None else np.asarray(pred.text_spans).astype(int).tolist(),
        "missing_attention": None if pred.missing_attention is None else _round_list(pred.missing_attention),
        "image_relevance": None if pred.image_relevance is None else _round_list(pred.image_relevance),
        "image_relevance_grid": None if pred.image_relevance is None else list(pred.image_relevance.shape[1:]),
        "text_relevance": None if pred.text_relevance is None else _round_list(pred.text_relevance),
        "probs_without_image": None if pred.probs_without_image is None else _round_list(pred.probs_without_image),
        "probs_without_note": None if pred.probs_without_note is None else _round_list(pred.probs_without_note),
    }
    try:  # the explanation engineer's per-label summary (peak on the DICOM grid, modality share, top word spans)
        from clinmm.explain.attention import explain_prediction

        summary = explain_prediction(sample, pred).to_dict()
        for item in summary["labels"]:
            for word in item.get("top_words") or []:
                word.pop("text", None)  # spans only: no note text in batch outputs
    except (ImportError, ValueError, AttributeError) as err:
        logger.debug("explanation summary unavailable (%s); raw attention only", type(err).__name__)
        summary = None
    doc["summary"] = summary
    atomic_write_text(ctx.out / "explanations" / f"{decoded.study.key}.json",
                      json.dumps(doc, sort_keys=True, allow_nan=True) + "\n")


def _write_sr(ctx: ScoreContext, decoded, pred) -> None:
    from clinmm.io.sr import SRFinding, build_sr, read_source_headers, write_sr

    if decoded.provenance is None or not pred.image_present:
        return
    files = [ctx.input_root / rel for rel in decoded.provenance.get("files", [])]
    if not files:
        return
    headers = read_source_headers(files)
    source = headers[len(headers) // 2]  # the slice a 2D model reads (clinmm.data.transforms.select_slice)
    findings = [SRFinding(label=lab, probability=float(pred.probs[c]), decision=bool(pred.decisions[c]),
                          threshold=float(pred.thresholds[c])) for c, lab in enumerate(ctx.labels)]
    loaded = ctx.predictor.loaded
    sr = build_sr(source, headers, findings, study_key=decoded.study.key, model_sha256=loaded.sha256,
                  model_name=str(loaded.model_card.get("name", "clinmm")), clinmm_version=ctx.clinmm_version)
    write_sr(sr, ctx.out / "sr" / f"{decoded.study.key}.dcm")


def finish_shard(ctx: ScoreContext, index: int, decoded: Sequence, predictions: dict, fingerprint_: str) -> None:
    """Write a computed shard: explanations / SR first, then the shard folder (atomic commit point)."""
    from clinmm.scoring.outputs import ShardStore

    rows, errors, stats = [], [], []
    for d in sorted(decoded, key=lambda d: d.study.index):
        pred = predictions.get(d.study.index)
        rows.append(study_row(ctx, d, pred))
        errors.extend(_error_rows(d))
        stats.append({"image_stats": d.sample.image_stats if (d.sample is not None and pred is not None
                                                              and pred.image_present) else None})
        if pred is not None and ctx.options.explain:
            _write_explanation(ctx, d, pred)
        if pred is not None and ctx.options.sr:
            try:
                _write_sr(ctx, d, pred)
            except Exception as err:  # an SR failure must not lose the scores; reported as an error row
                logger.warning("study %s: SR not written (%s)", d.study.key, type(err).__name__)
                errors.append({"path": d.study.source_path, "status": "sr_failed", "detail": type(err).__name__,
                               "message": "DICOM SR could not be written for this study"})
    ShardStore(ctx.out).write(index, fingerprint_=fingerprint_, rows=rows, errors=errors, stats=stats)


def _local_engine(ctx: ScoreContext, todo: list[int], progress) -> Iterator[tuple[int, list, dict]]:
    """Decode in DataLoader workers, then model batches per shard; yields (shard, decoded studies, predictions)."""
    from clinmm.scoring.pipeline import StudyChunks, iter_decoded, make_batches, predict_batches

    chunks, owner = [], []
    for index in todo:
        studies = ctx.shard_studies(index)
        for i in range(0, len(studies), ctx.options.chunk_size):
            chunks.append(studies[i : i + ctx.options.chunk_size])
            owner.append(index)
    remaining = {index: len(ctx.shard_studies(index)) for index in todo}
    dataset = StudyChunks(chunks, builder=ctx.builder(), scope=ctx.scope, salt=ctx.salt,
                          max_file_bytes=ctx.max_file_bytes, max_pixels=ctx.max_pixels)
    current: dict[int, list] = {}
    studies_to_shard = {s.index: index for index in todo for s in ctx.shard_studies(index)}
    for d in iter_decoded(dataset, workers=ctx.workers, file_timeout_s=ctx.file_timeout_s):
        index = studies_to_shard[d.study.index]
        current.setdefault(index, []).append(d)
        remaining[index] -= 1
        if remaining[index] == 0:
            items = current.pop(index)
            batches = make_batches(items, ctx.batch_size)
            preds = predict_batches(ctx.predictor, batches, explain=ctx.options.explain)
            by_index = {d.study.index: p for b, ps in zip(batches, preds) for d, p in zip(b, ps)}
            if progress is not None:
                progress.update(len(items))
            yield index, items, by_index


def _finalize(ctx: ScoreContext) -> tuple[int, int, int, int, float | None]:
    """Assemble the final files from all shards; returns (scored, not scored, files ok, error rows, drift)."""
    from clinmm.scoring.drift import drift_report
    from clinmm.scoring.outputs import ShardStore, atomic_write_text, write_errors, write_predictions

    store = ShardStore(ctx.out)
    rows, errors, stats = [], [], []
    for index in range(ctx.n_shards):
        r, e, s = store.read(index)
        rows += r
        errors += e
        stats += s
    errors += [{"path": h.rel, "status": h.status, "detail": h.detail, "message": h.message}
               for h in ctx.inventory.orphans]
    columns, types = _columns(ctx)
    write_predictions(ctx.out, rows, columns, types)
    write_errors(ctx.out, errors)
    scored = [r for r in rows if r[f"prob_{ctx.labels[0]}"] is not None] if ctx.labels else []
    probs = np.array([[r[f"prob_{lab}"] for lab in ctx.labels] for r in scored], dtype=np.float64).reshape(
        len(scored), len(ctx.labels))
    intensity = [s["image_stats"] for s in stats if s.get("image_stats")]
    drift = drift_report(ctx.predictor.loaded.reference, labels=ctx.labels, probs=probs, intensity=intensity,
                         image_present=[bool(r["image_present"]) for r in scored],
                         note_present=[bool(r["note_present"]) for r in scored])
    atomic_write_text(ctx.out / "drift.json", json.dumps(drift, indent=2, sort_keys=True) + "\n")
    files_ok = sum(int(r["n_files_ok"]) for r in rows)
    return len(scored), len(rows) - len(scored), files_ok, len(errors), drift["drift_score"]


def score(input: str | os.PathLike[str], model: str | os.PathLike[str], out: str | os.PathLike[str], *,
          options: ScoreOptions | None = None) -> ScoreSummary:
    """Score every study under ``input`` (folder or manifest) with the checkpoint ``model`` into ``out``.

    Args:
        input: folder tree of DICOM files, or a manifest CSV / Parquet.
        model: checkpoint directory.
        out: output folder (created; resumable).
        options: see :class:`ScoreOptions`.

    Returns:
        A :class:`ScoreSummary` (``exit_code`` 0 or 3).

    Raises:
        ClinmmError: usage errors (missing input, bad option, unloadable checkpoint, unreadable notes file).
    """
    from clinmm.scoring.outputs import output_lock

    options = options or ScoreOptions()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    ctx = prepare_context(input, model, out, options=options)
    ctx.out.mkdir(parents=True, exist_ok=True)
    with output_lock(ctx.out):
        return _score_locked(ctx, options, started, t0)


def _score_locked(ctx: ScoreContext, options: ScoreOptions, started: datetime, t0: float) -> ScoreSummary:
    """The body of :func:`score`, run while this process holds the output directory's lock."""
    from clinmm.scoring.outputs import ShardStore, atomic_write_text

    store = ShardStore(ctx.out)
    cleaned = store.clean_partial()
    if cleaned:
        logger.info("removed %d unfinished shard(s) from an interrupted run; recomputing them whole", cleaned)
    store.remove_beyond(ctx.n_shards)
    fingerprints = [_shard_fingerprint(ctx, i) for i in range(ctx.n_shards)]
    todo = [i for i in range(ctx.n_shards) if not store.is_done(i, fingerprints[i])]
    reused = ctx.n_shards - len(todo)
    if reused:
        logger.info("resuming: %d of %d shard(s) already finished", reused, ctx.n_shards)
    n_todo = sum(len(ctx.shard_studies(i)) for i in todo)
    progress = None
    if options.progress and n_todo:
        from tqdm.auto import tqdm

        progress = tqdm(total=n_todo, unit="study", desc="scoring", dynamic_ncols=True, smoothing=0.1)
    t_compute = time.perf_counter()
    if options.engine == "ray":
        from clinmm.engines.ray_scoring import ray_engine

        engine = ray_engine(ctx, todo, progress)
    else:
        engine = _local_engine(ctx, todo, progress)
    try:
        for index, decoded, predictions in engine:
            finish_shard(ctx, index, decoded, predictions, fingerprints[index])
    finally:
        if progress is not None:
            progress.close()
    compute_s = time.perf_counter() - t_compute
    scored, not_scored, files_ok, n_errors, drift = _finalize(ctx)
    elapsed = time.perf_counter() - t0
    n_files = ctx.inventory.n_files
    exit_code = EXIT_INCOMPLETE if n_errors else EXIT_OK
    summary = ScoreSummary(out=ctx.out, studies=len(ctx.inventory.studies), scored=scored, not_scored=not_scored,
                           files=n_files, files_ok=files_ok, errors=n_errors, shards=ctx.n_shards,
                           shards_reused=reused, elapsed_s=round(elapsed, 3),
                           studies_per_s=round(n_todo / compute_s, 3) if n_todo and compute_s > 0 else 0.0,
                           drift_score=drift, exit_code=exit_code)
    loaded = ctx.predictor.loaded
    run = {"started": started.isoformat(), "finished": datetime.now(timezone.utc).isoformat(),
           "command": options.command, "input": str(ctx.input), "model": str(loaded.path), "out": str(ctx.out),
           "engine": options.engine, "device": str(loaded.device), "batch_size": ctx.batch_size,
           "workers": ctx.workers, "shard_size": ctx.shard_size, "model_sha256": loaded.sha256,
           "clinmm_version": ctx.clinmm_version, "compute_s": round(compute_s, 3),
           "studies_computed": n_todo, "summary": summary.as_dict()}
    atomic_write_text(ctx.out / "run.json", json.dumps(run, indent=2, sort_keys=True) + "\n")
    logger.info("scored %d stud(y/ies), %d not scored, %d error row(s); %d shard(s) reused; %.1f s", scored,
                not_scored, n_errors, reused, elapsed)
    return summary
