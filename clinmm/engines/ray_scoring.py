"""``clinmm score --engine ray``: the same scoring on Ray Data, for one machine or a multi-node Ray cluster.

Pipeline (one Ray dataset over the studies of every unfinished shard)::

    from_items(studies) ─► map_batches(_Decode, CPU tasks)        decode + scope check + tokenise (clinmm.scoring)
                        ─► map_batches(_Predict, actor pool)      the model, one GPU per actor when on CUDA
                        ─► iter_batches → driver                  grouped back into shards, written by the same
                                                                  atomic shard writer as the local engine

Rows match the local engine: same study keys, statuses and decisions; probabilities agree within 1e-5 (batches are
formed by Ray, so padding and summation order may differ). Outputs go through the shard writer rather than Ray's
``write_parquet`` so that resume, byte-identical reruns and ``errors.csv`` / ``drift.json`` work the same on both
engines. On a cluster, INPUT, the checkpoint and OUT must be on a file system every node sees (see docs/scoring.md).

clinmm's objects (:class:`~clinmm.scoring.discover.StudyInput`, :class:`~clinmm.scoring.pipeline.DecodedStudy`,
:class:`~clinmm.inference.Prediction`) travel between the stages as object columns of the batches: Ray Data stores
them with its Python-object Arrow extension type (serialised by Ray itself, like any task argument); this module never
serialises anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from clinmm.errors import ConfigError

__all__ = ["ray_engine"]

logger = logging.getLogger(__name__)


class _Decode:
    """Ray Data UDF: a batch of :class:`~clinmm.scoring.discover.StudyInput` → their :class:`DecodedStudy` objects."""

    def __init__(self, builder, scope, salt: bytes, max_file_bytes: int, max_pixels: int) -> None:
        from clinmm.scoring.pipeline import setup_decode_worker

        setup_decode_worker()  # one torch thread per decode actor
        self.kw = dict(builder=builder, scope=scope, salt=salt, max_file_bytes=max_file_bytes, max_pixels=max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from clinmm.scoring.pipeline import decode_study

        return {"decoded": _objects([decode_study(study, **self.kw) for study in batch["study"]])}


class _Predict:
    """Ray Data actor: loads the checkpoint once, scores length-bucketed batches of decoded studies."""

    def __init__(self, checkpoint: str, device: str, batch_size: int, explain: bool, max_file_bytes: int,
                 max_pixels: int) -> None:
        from clinmm.inference import Predictor, load_checkpoint, resolve_device

        self.predictor = Predictor(load_checkpoint(checkpoint, device=resolve_device(device)),
                                   max_file_bytes=max_file_bytes, max_pixels=max_pixels)
        self.batch_size = batch_size
        self.explain = explain

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from clinmm.scoring.pipeline import make_batches, predict_batches

        decoded = list(batch["decoded"])
        batches = make_batches(decoded, self.batch_size)
        preds = predict_batches(self.predictor, batches, explain=self.explain)
        by_index = {d.study.index: p for b, ps in zip(batches, preds) for d, p in zip(b, ps)}
        return {"decoded": batch["decoded"], "prediction": _objects([by_index.get(d.study.index) for d in decoded])}


def _objects(values: list) -> np.ndarray:
    """A 1-D object column (``np.array`` of a list of tuples or arrays would build a 2-D array instead)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def ray_engine(ctx, todo: list[int], progress) -> Iterator[tuple[int, list, dict]]:
    """Yield ``(shard index, decoded studies, {study index: Prediction})`` for every shard in ``todo``."""
    try:
        import ray
    except ImportError as err:
        raise ConfigError("--engine ray needs the extra: pip install 'clinmm[ray]'") from err
    studies = [s for index in todo for s in ctx.shard_studies(index)]
    if not studies:
        return
    started = False
    if not ray.is_initialized():
        kwargs = {"address": ctx.options.ray_address} if ctx.options.ray_address else {
            "address": "local", "num_cpus": max(1, ctx.workers or 1) + 1, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
        started = True
    try:
        import ray.data

        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False
        # clinmm's dataclasses have no Arrow type: store them as Python objects (saying so silences Ray's warning)
        data_context.enable_fallback_to_arrow_object_ext_type = True
        loaded = ctx.predictor.loaded
        on_gpu = loaded.device.type == "cuda"
        ds = ray.data.from_items([{"study": s} for s in studies])
        ds = ds.map_batches(_Decode, fn_constructor_args=(ctx.builder(), ctx.scope, ctx.salt, ctx.max_file_bytes,
                                                          ctx.max_pixels),
                            batch_size=ctx.options.chunk_size, concurrency=max(1, ctx.workers), num_cpus=1)
        ds = ds.map_batches(_Predict, fn_constructor_args=(str(loaded.path), str(loaded.device), ctx.batch_size,
                                                           ctx.options.explain, ctx.max_file_bytes, ctx.max_pixels),
                            batch_size=ctx.batch_size * 4, concurrency=1, num_gpus=1 if on_gpu else 0,
                            num_cpus=0 if on_gpu else 1)
        shard_of = {s.index: index for index in todo for s in ctx.shard_studies(index)}
        remaining = {index: len(ctx.shard_studies(index)) for index in todo}
        pending: dict[int, tuple[list, dict]] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for d, pred in zip(batch["decoded"], batch["prediction"]):
                index = shard_of[d.study.index]
                items, preds = pending.setdefault(index, ([], {}))
                items.append(d)
                if pred is not None:
                    preds[d.study.index] = pred
                remaining[index] -= 1
                if remaining[index] == 0:
                    if progress is not None:
                        progress.update(len(items))
                    yield index, *pending.pop(index)
    finally:
        if started:
            ray.shutdown()
