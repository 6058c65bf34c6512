"""Throughput of ``clinmm score`` against a naive loop, decode-only and the model-only ceiling (studies/s).

On one generated set (2D radiographs, uncompressed, short notes unless ``--realistic``), for each configuration
(``demo``: small DenseNet on 128² inputs; ``densenet121``: the default model on 256² inputs; weights are random —
throughput does not depend on them):

- **clinmm score**: the real pipeline (DataLoader decode workers, length-bucketed batches, pinned memory, side-stream
  H2D copies, bf16 autocast on CUDA). ``pipeline`` = studies / time from first decode to last shard written;
  ``total`` also counts input discovery (header scan) and writing the final files, not the checkpoint load.
- **naive**: MONAI ``LoadImage`` per study in a Python loop, fp32, batch 1 (what a first script would do).
- **decode-only**: the same discovery + worker decode + tokenisation as clinmm score, no model.
- **model-only**: the model on ready, already-collated tensors at its best batch size (from ``--batch-sizes``).

The CPU acceptance compares ``pipeline`` with ``1 / (1/decode + 1/model)`` (decode and model back to back on the same
cores: the pipeline adds no waste if it reaches ≥ 0.9 of it). On a GPU machine (16 CPU workers) the targets are
``pipeline ≥ 10 × naive``, ``≥ 0.85 × model-only`` and ``≥ 2,000 studies/s`` for the densenet121 configuration.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/score_throughput.py --studies 400 --workers 2            # CPU
    HF_HUB_OFFLINE=1 python benchmarks/score_throughput.py --studies 20000 --workers 16 \\
        --device cuda --batch-sizes 64,128,256,512 --naive-studies 500 --json out.json              # H100
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("score_throughput")


def _generate(data: Path, studies: int, seed: int, realistic: bool) -> None:
    from clinmm.data.synthetic.generate import SyntheticOptions, generate_sample_data

    if (data / "manifest.csv").is_file():
        return
    opts = SyntheticOptions() if realistic else SyntheticOptions(
        image_size=256, ct_fraction=0.0, rle=0.0, jpegls=0.0, long_note=0.0, non_square=0.0, missing_image=0.0,
        missing_note=0.0)
    t = time.perf_counter()
    generate_sample_data(data, studies=studies, seed=seed, options=opts, overwrite=True)
    logger.info("generated %d studies in %.0f s", studies, time.perf_counter() - t)


def _checkpoint(name: str, out: Path) -> Path:
    from clinmm.calibration import LabelCalibration
    from clinmm.checkpoint import build_model, save_checkpoint
    from clinmm.config import ClinmmConfig, demo_config

    labels = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
    cfg = demo_config() if name == "demo" else ClinmmConfig()
    torch.manual_seed(0)
    model = build_model(cfg, labels).eval()
    path = out / f"ckpt_{name}"
    save_checkpoint(path, model=model, config=cfg, labels=labels, calibration=[LabelCalibration() for _ in labels],
                    scope={"modalities": ["CR", "DX"]}, model_card={"name": f"bench-{name}"}, reference={})
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_score(data: Path, ckpt: Path, out: Path, *, workers: int, batch_size: int, device: str) -> dict:
    from clinmm.score import ScoreOptions, score

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    summary = score(data / "dicom", ckpt, out, options=ScoreOptions(notes=data / "notes.csv", workers=workers,
                                                                     batch_size=batch_size, device=device,
                                                                     shard_size=max(256, batch_size * 4),
                                                                     salt_file=out.parent / "salt"))
    total = time.perf_counter() - t
    run = json.loads((out / "run.json").read_text())
    n = summary.studies
    return {"studies": n, "pipeline_s": run["compute_s"], "pipeline": n / run["compute_s"],
            "total_incl_load_s": total, "exit_code": summary.exit_code}


def run_decode_only(data: Path, ckpt: Path, *, workers: int, device: str) -> tuple[dict, list]:
    from clinmm.score import ScoreOptions, prepare_context
    from clinmm.scoring.pipeline import StudyChunks, iter_decoded

    tmp = Path(tempfile.mkdtemp(prefix="clinmm_bench_"))
    ctx = prepare_context(data / "dicom", ckpt, tmp / "o", options=ScoreOptions(
        notes=data / "notes.csv", workers=workers, device=device, salt_file=tmp / "salt"))
    studies = ctx.inventory.studies
    chunks = [studies[i : i + 8] for i in range(0, len(studies), 8)]
    ds = StudyChunks(chunks, builder=ctx.builder(), scope=ctx.scope, salt=ctx.salt, max_file_bytes=ctx.max_file_bytes,
                     max_pixels=ctx.max_pixels)
    t = time.perf_counter()
    decoded = list(iter_decoded(ds, workers=workers))
    dt = time.perf_counter() - t
    shutil.rmtree(tmp, ignore_errors=True)
    samples = [d.sample for d in decoded if d.sample is not None]
    return {"studies": len(decoded), "seconds": dt, "rate": len(decoded) / dt}, samples


def run_model_only(ckpt: Path, samples: list, *, device: str, batch_sizes: list[int], min_seconds: float) -> dict:
    from clinmm.inference import Predictor, load_checkpoint, resolve_device

    dev = resolve_device(device)
    predictor = Predictor(load_checkpoint(ckpt, device=dev))
    results = {}
    for bs in batch_sizes:
        batches = [predictor.collate(samples[i : i + bs]) for i in range(0, len(samples) - bs + 1, bs)] or [
            predictor.collate(samples[:bs])]
        dev_batches = [b.inputs.to(dev) for b in batches]
        from clinmm.data.dataset import Batch

        run = [Batch(inputs=x, labels=None, keys=b.keys, offsets=b.offsets) for x, b in zip(dev_batches, batches)]
        predictor.forward(run[0])  # warm-up (cuDNN autotune, allocator)
        _sync(dev)
        n, t = 0, time.perf_counter()
        while True:
            for b in run:
                out = predictor.forward(b)
                n += len(b.keys)
            _sync(dev)
            if time.perf_counter() - t >= min_seconds:
                break
        _ = out
        results[bs] = n / (time.perf_counter() - t)
    best = max(results, key=results.get)
    return {"rate": results[best], "best_batch_size": best, "by_batch_size": results}


def run_naive(data: Path, ckpt: Path, *, device: str, limit: int) -> dict:
    """MONAI LoadImage + per-study Python loop, fp32, batch 1."""
    import csv

    from monai.transforms import LoadImage, Resize, ScaleIntensity

    from clinmm.inference import load_checkpoint, resolve_device
    from clinmm.models.classifier import ModelInputs
    from clinmm.text.tokenize import collate_notes

    dev = resolve_device(device)
    loaded = load_checkpoint(ckpt, device=dev)
    model = loaded.model.float().eval()
    size = loaded.config.data.image_size
    tok = model.text_encoder.note_tokenizer()
    loader = LoadImage(image_only=True, reader="PydicomReader")
    scale, resize = ScaleIntensity(), Resize((size, size))
    with (data / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:limit]
    t = time.perf_counter()
    with torch.no_grad():
        for r in rows:
            if r["image_path"]:
                img = np.asarray(loader(str(data / r["image_path"])), dtype=np.float32)
                img = img[..., img.shape[-1] // 2] if img.ndim == 3 else img  # middle slice of a series
                x = resize(scale(img[None]))  # (1, H, W)
                image = torch.as_tensor(np.asarray(x), dtype=torch.float32)[None].to(dev)  # (1, 1, H, W)
                present = torch.ones(1, dtype=torch.bool, device=dev)
            else:
                image = torch.zeros(1, 1, size, size, device=dev)
                present = torch.zeros(1, dtype=torch.bool, device=dev)
            notes = collate_notes([tok.encode(r["note_text"] or None)])
            inputs = ModelInputs(image=image, image_present=present, input_ids=notes["input_ids"].to(dev),
                                 attention_mask=notes["attention_mask"].to(dev), keep=notes["keep"].to(dev),
                                 text_present=notes["keep"].flatten(1).any(1).to(dev))
            model(inputs).probs.cpu()
    dt = time.perf_counter() - t
    return {"studies": len(rows), "seconds": dt, "rate": len(rows) / dt}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("runs/bench/score_data"))
    p.add_argument("--studies", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--realistic", action="store_true", help="the default generator mix (CT, compressed, long notes)")
    p.add_argument("--configs", default="demo,densenet121")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=0, help="clinmm score batch size (0 = model-only best)")
    p.add_argument("--batch-sizes", default="8,16,32,64")
    p.add_argument("--naive-studies", type=int, default=100)
    p.add_argument("--model-seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _generate(args.data, args.studies, args.seed, args.realistic)
    work = Path(tempfile.mkdtemp(prefix="clinmm_bench_"))
    report: dict = {"device": args.device, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "workers": args.workers,
                    "data": str(args.data), "configs": {}}
    try:
        for name in args.configs.split(","):
            ckpt = _checkpoint(name, work)
            decode, samples = run_decode_only(args.data, ckpt, workers=args.workers, device=args.device)
            model = run_model_only(ckpt, samples, device=args.device,
                                   batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
                                   min_seconds=args.model_seconds)
            bs = args.batch_size or model["best_batch_size"]
            e2e = run_score(args.data, ckpt, work / f"out_{name}", workers=args.workers, batch_size=bs,
                            device=args.device)
            naive = run_naive(args.data, ckpt, device=args.device, limit=args.naive_studies)
            serial = 1.0 / (1.0 / decode["rate"] + 1.0 / model["rate"])
            r = {"clinmm_score": e2e, "naive": naive, "decode_only": decode, "model_only": model,
                 "serial_bound": serial, "batch_size": bs,
                 "ratios": {"pipeline_vs_serial_bound": e2e["pipeline"] / serial,
                            "pipeline_vs_naive": e2e["pipeline"] / naive["rate"],
                            "pipeline_vs_model_only": e2e["pipeline"] / model["rate"]}}
            report["configs"][name] = r
            print(f"[{name}] studies={e2e['studies']} batch={bs} workers={args.workers} device={args.device}")
            print(f"  clinmm score : {e2e['pipeline']:9.1f} studies/s (pipeline; total incl. discovery+load "
                  f"{e2e['studies'] / e2e['total_incl_load_s']:.1f})")
            print(f"  naive        : {naive['rate']:9.1f} studies/s (MONAI LoadImage loop, fp32, batch 1, "
                  f"{naive['studies']} studies)")
            print(f"  decode-only  : {decode['rate']:9.1f} studies/s")
            print(f"  model-only   : {model['rate']:9.1f} studies/s (best batch {model['best_batch_size']}: "
                  + ", ".join(f"{k}: {v:.1f}" for k, v in model["by_batch_size"].items()) + ")")
            print(f"  serial bound : {serial:9.1f} studies/s  = 1/(1/decode + 1/model)")
            print("  ratios       : " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
