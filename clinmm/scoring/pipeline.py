"""The scoring pipeline: decode studies in DataLoader worker processes, bucket notes by length, run the model.

- **Decode** (:func:`decode_study`, in workers): every file of a study whose header passed the scan is decoded with
  :func:`clinmm.io.dicom.read_dicom` (so every file gets a final status); the image series is chosen by
  :func:`clinmm.io.series.choose_series` and stacked by ingestion's volume builder; the scope check runs on the
  decoded modality / view / body part; the note is tokenised. Workers return :class:`DecodedStudy` objects in the
  sorted input order, a chunk of studies at a time.
- **Batches** (:func:`make_batches`): within a shard, scored studies are sorted by note length (token count, then
  index) and cut into ``batch_size`` batches, so padding stays small and the batches are the same on every run.
- **Model** (:func:`predict_batches`): ``torch.inference_mode`` + bf16 autocast on CUDA (via
  :class:`clinmm.inference.Predictor`), pinned host batches, and the next batch copied to the GPU on a side stream
  while the current one computes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from clinmm.data.dataset import Batch, Sample, SampleBuilder
from clinmm.errors import IngestError
from clinmm.inference import Prediction, Predictor
from clinmm.io.status import Status
from clinmm.scoring.discover import FileHeader, StudyInput, error_message
from clinmm.scoring.study_check import ScopeRule

__all__ = ["DecodedStudy", "FileResult", "ScopeRule", "decode_study", "StudyChunks", "iter_decoded", "make_batches",
           "predict_batches", "setup_decode_worker"]

logger = logging.getLogger(__name__)


@dataclass
class FileResult:
    """Final status of one file (no DICOM content)."""

    rel: str
    status: str
    detail: str = ""
    message: str = ""


@dataclass
class DecodedStudy:
    """A study after decode, ready to batch (or not to be scored).

    Args:
        study: the input.
        sample: model input, or None when the study is not scored.
        files: final per-file statuses.
        status: ``ok`` (scored, every file ok), ``partial`` (scored, some file not ok or the image unusable),
            ``out_of_scope`` or ``not_scored``.
        detail: why not ``ok`` (no PHI).
        modality: decoded modality ("" without image).
        scope: scope violations ("" when in scope), also kept when ``force`` scored the study.
        provenance: ingestion provenance as a dict (None without image).
        n_tokens: note tokens (for length bucketing).
    """

    study: StudyInput
    sample: Sample | None
    files: list[FileResult]
    status: str
    detail: str = ""
    modality: str = ""
    scope: str = ""
    provenance: dict | None = None
    n_tokens: int = 0


def _series_header(path: str, img) -> object:
    from clinmm.io.series import SeriesHeader

    return SeriesHeader(path=path, study_uid=img.study_uid, series_uid=img.series_uid, modality=img.modality.upper(),
                        view_position=(img.view_position or "").strip().upper(),
                        image_type=tuple(str(v).upper() for v in img.image_type), orientation=img.orientation,
                        series_number=img.series_number)


def _build_volume(decoded: list[tuple[FileHeader, object]], *, source: str, salt: bytes | None):
    """Choose the series among decoded files and stack it (ingestion's rules); returns (volume, chosen rels)."""
    from clinmm.io.load import build_volume  # ingestion's volume builder (series sort + checks + provenance)
    from clinmm.io.series import choose_series

    groups: dict[str, list] = {}
    by_path = {}
    for h, img in decoded:
        sh = _series_header(h.path, img)
        groups.setdefault(img.series_uid, []).append(sh)
        by_path[h.path] = (h, img)
    choice = choose_series(groups)
    chosen = [by_path[sh.path] for sh in groups[choice.series_uid]]
    images = [img for _, img in chosen]
    rels = [h.rel for h, _ in chosen]
    return build_volume(images, rels, path=source, rule=choice.rule, salt=salt), rels


def decode_study(study: StudyInput, *, builder: SampleBuilder, scope: ScopeRule, salt: bytes | None,
                 max_file_bytes: int, max_pixels: int) -> DecodedStudy:
    """Decode, scope-check and prepare one study (see module docstring). Never raises for bad input."""
    from clinmm.io.dicom import read_dicom
    from clinmm.io.provenance import provenance_to_dict

    files: dict[str, FileResult] = {}
    decoded = []
    for h in study.files:
        if h.status != Status.OK.value:
            files[h.rel] = FileResult(h.rel, h.status, h.detail, h.message)
            continue
        try:
            img = read_dicom(h.path, max_file_bytes=max_file_bytes, max_pixels=max_pixels)
        except IngestError as err:
            files[h.rel] = FileResult(h.rel, str(err.status), err.detail, error_message(err))
            continue
        files[h.rel] = FileResult(h.rel, Status.OK.value)
        decoded.append((h, img))
    volume = None
    detail = ""
    if decoded:
        try:
            volume, used = _build_volume(decoded, source=study.source_path, salt=salt)
        except IngestError as err:
            detail = f"{err.status}:{err.detail}" if err.detail else str(err.status)
            for h, _ in decoded:  # the whole chosen series is unusable
                files[h.rel] = FileResult(h.rel, str(err.status), err.detail, error_message(err))
        del decoded
    file_list = [files[h.rel] for h in study.files]
    modality = volume.modality.upper() if volume is not None else ""
    violations = []
    if volume is not None:
        violations = scope.violations(modality, str(volume.meta.get("ViewPosition", "")),
                                      str(volume.meta.get("BodyPartExamined", "")))
    scope_text = ";".join(violations)
    if violations and not scope.force:
        return DecodedStudy(study=study, sample=None, files=file_list, status=Status.OUT_OF_SCOPE.value,
                            detail=scope_text, modality=modality, scope=scope_text,
                            provenance=provenance_to_dict(volume.provenance))
    has_note = bool(study.note and study.note.strip())
    if volume is None and not has_note:
        reason = detail or ("no_image_file" if not study.files else "no_usable_image")
        return DecodedStudy(study=study, sample=None, files=file_list, status="not_scored",
                            detail=f"{reason};no_note", modality=modality, scope=scope_text)
    sample = builder.build(volume, study.note, key=study.key)
    all_ok = all(f.status == Status.OK.value for f in file_list) and bool(file_list)
    if study.files and volume is None:
        detail = detail or "no_usable_image"
    status = "ok" if (all_ok and volume is not None) or (not study.files and has_note) else "partial"
    if status == "partial" and not detail:
        detail = "file_errors"
    n_tokens = int(sample.note.attention_mask.sum()) if sample.note.num_chunks else 0
    return DecodedStudy(study=study, sample=sample, files=file_list, status=status, detail=detail,
                        modality=modality, scope=scope_text,
                        provenance=provenance_to_dict(volume.provenance) if volume is not None else None,
                        n_tokens=n_tokens)


class StudyChunks(Dataset):
    """Map-style dataset whose items are chunks of consecutive studies (fewer, larger worker round trips).

    Args:
        chunks: lists of studies, in order.
        builder: sample builder (checkpoint preprocessing + tokenizer).
        scope: scope rule.
        salt: installation salt (provenance series key).
        max_file_bytes: ingestion bound.
        max_pixels: ingestion bound.
    """

    def __init__(self, chunks: Sequence[Sequence[StudyInput]], *, builder: SampleBuilder, scope: ScopeRule,
                 salt: bytes | None, max_file_bytes: int, max_pixels: int) -> None:
        self.chunks = list(chunks)
        self.builder = builder
        self.scope = scope
        self.salt = salt
        self.max_file_bytes = max_file_bytes
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.chunks)

    def _decode(self, study: StudyInput) -> DecodedStudy:
        return decode_study(study, builder=self.builder, scope=self.scope, salt=self.salt,
                            max_file_bytes=self.max_file_bytes, max_pixels=self.max_pixels)

    def __getitem__(self, index: int) -> list[DecodedStudy]:
        return [self._decode(s) for s in self.chunks[index]]


def _identity(x):
    return x


_SETUP_PID = -1  # the process that last ran setup_decode_worker (a forked child starts with its parent's value)


def setup_decode_worker() -> None:
    """Make this process a decode worker: one torch (OpenMP / MKL) thread, the note-length warning silenced.

    The model runs in the scoring process on all of torch's intra-op threads (torch's default: one per core). A decode
    worker forked from that process would inherit the same thread count and run the image resize on every core, so
    ``workers`` decode processes plus the model would ask for ``(workers + 1) × cores`` threads; with one thread
    each they ask for ``workers + cores``, and a worker's share of the CPU is one core at most. Called by the
    DataLoader workers, by the fallback's guarded workers and by Ray's decode actors; idempotent per process.
    """
    global _SETUP_PID
    if _SETUP_PID == os.getpid():
        return
    _SETUP_PID = os.getpid()
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore", message="note of .* characters needs")


def _worker_init(_: int) -> None:
    setup_decode_worker()


_GUARDED: StudyChunks | None = None  # set before forking the guarded fallback workers (fork start method)


def _decode_guarded(study: StudyInput) -> DecodedStudy:
    assert _GUARDED is not None
    setup_decode_worker()  # the fallback's workers are forked from the scoring process (all its threads)
    return _GUARDED._decode(study)


def _failed_study(study: StudyInput, failure) -> DecodedStudy:
    """A study whose decode worker crashed or ran past its deadline: every readable file gets ``decode_error``."""
    detail = f"worker_{failure.reason}:{failure.detail}"
    files = [FileResult(h.rel, h.status, h.detail, h.message) if h.status != Status.OK.value
             else FileResult(h.rel, Status.DECODE_ERROR.value, detail, "decoder crashed or exceeded the deadline")
             for h in study.files]
    has_note = bool(study.note and study.note.strip())
    return DecodedStudy(study=study, sample=None, files=files, status="not_scored",
                        detail=f"{detail}" + ("" if has_note else ";no_note"))


def iter_decoded(dataset: StudyChunks, *, workers: int, prefetch: int = 4, file_timeout_s: float = 30.0,
                 ) -> Iterator[DecodedStudy]:
    """Decoded studies in input order; decoding runs in ``workers`` DataLoader processes (0 = in this process).

    If a DataLoader worker dies (a C decoder crash) or stalls past the deadline, the studies not yet delivered are
    decoded by :func:`clinmm.io.worker.guarded_map` instead — one study per worker call with a per-study deadline —
    so the bad file costs one ``decode_error`` row, not the run. Its studies come out in completion order.
    """
    if workers <= 0:
        for i in range(len(dataset)):
            yield from dataset[i]
        return
    chunk = max((len(c) for c in dataset.chunks), default=1)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
                        prefetch_factor=prefetch, worker_init_fn=_worker_init, persistent_workers=False,
                        timeout=max(120.0, file_timeout_s * chunk * 4),
                        multiprocessing_context="fork" if os.name == "posix" else None)
    done: set[int] = set()
    try:
        for items in loader:
            for d in items:
                done.add(d.study.index)
                yield d
        return
    except RuntimeError as err:  # "DataLoader worker ... exited unexpectedly" / "timed out"
        logger.warning("a decode worker failed (%s); decoding the remaining studies one by one with deadlines",
                       type(err).__name__)
    from clinmm.io.worker import guarded_map

    global _GUARDED
    _GUARDED = dataset
    rest = [s for c in dataset.chunks for s in c if s.index not in done]
    try:
        for _, d in guarded_map(_decode_guarded, rest, on_failure=_failed_study, workers=workers,
                                deadline_s=file_timeout_s * 4, start_method="fork"):
            yield d
    finally:
        _GUARDED = None


def make_batches(items: Sequence[DecodedStudy], batch_size: int) -> list[list[DecodedStudy]]:
    """Length bucketing: scored studies sorted by (note tokens, index), cut into batches of ``batch_size``."""
    scored = sorted((d for d in items if d.sample is not None), key=lambda d: (d.n_tokens, d.study.index))
    return [scored[i : i + batch_size] for i in range(0, len(scored), batch_size)]


def predict_batches(predictor: Predictor, batches: Sequence[Sequence[DecodedStudy]], *, explain: bool = False,
                    ) -> list[list[Prediction]]:
    """Run the model over ready batches; on CUDA, pinned batches are copied one step ahead on a side stream."""
    device = predictor.loaded.device
    cpu_batches = [predictor.collate([d.sample for d in b]) for b in batches]
    if device.type != "cuda":
        return [predictor.predictions(predictor.forward(cb, explain=explain), cb, explain=explain)
                for cb in cpu_batches]
    stream = torch.cuda.Stream(device=device)

    def upload(cb: Batch):
        cb.pin_memory()
        with torch.cuda.stream(stream):
            return cb.inputs.to(device, non_blocking=True)

    results = []
    nxt = upload(cpu_batches[0]) if cpu_batches else None
    for i, cb in enumerate(cpu_batches):
        torch.cuda.current_stream(device).wait_stream(stream)
        inputs = nxt
        for t in inputs.__dict__.values():
            t.record_stream(torch.cuda.current_stream(device))
        nxt = upload(cpu_batches[i + 1]) if i + 1 < len(cpu_batches) else None
        dev_batch = Batch(inputs=inputs, labels=None, keys=cb.keys, offsets=cb.offsets, boxes=cb.boxes)
        out = predictor.forward(dev_batch, explain=explain)
        results.append(predictor.predictions(out, cb, explain=explain))
    return results
