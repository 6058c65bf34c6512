"""One-study latency of the dashboard's case view: score + explain (attention) with the model already cached.

What is timed per study is exactly what the case view runs on a cache miss (``dashboards.case_result.live_result``):
ingest the DICOM, tokenize the note, forward pass with attention, calibration, heatmap mapped back onto the original
pixel grid for every label, note spans. The model is loaded once beforehand (as ``st.cache_resource`` does) and warmed
up; each timed study is different, and decoding caches are not reused between repetitions.

    HF_HUB_OFFLINE=1 python benchmarks/dashboard_latency.py --model runs/demo/checkpoint \
        --manifest sample_data/demo/manifest.csv --studies 40 --repeat 2

Prints wall-clock p50 / p95 / mean in milliseconds, CPU time per call (p50 / p95), the machine's load average,
the device, the image size and the note length in tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest with image_path / note_text")
    parser.add_argument("--studies", type=int, default=40, help="studies to time (with an image and a note)")
    parser.add_argument("--repeat", type=int, default=2, help="passes over those studies")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--max-note-tokens", type=int, default=512,
                        help="headline figures for notes up to this many tokens; longer notes are timed separately")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from clinmm.inference import Predictor, load_checkpoint, resolve_device
    from dashboards.case_result import live_result

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    predictor = Predictor(load_checkpoint(args.model, device=device))
    load_s = time.perf_counter() - t0
    rows = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
    scope = predictor.loaded.scope.get("modalities") or []
    if "modality" in rows.columns and scope:
        rows = rows[rows["modality"].isin(scope)]
    rows = rows[(rows["image_path"] != "") & (rows["note_text"] != "")]
    rows = rows[rows["split"] == "test"] if (rows["split"] == "test").sum() >= args.studies else rows
    rows = rows.head(args.studies)
    if rows.empty:
        raise SystemExit(f"{args.manifest}: no study with both an image and a note in the model's scope")
    root = args.manifest.parent
    studies = [(root / r.image_path, r.note_text, r.study_id) for r in rows.itertuples()]
    n_tokens = {s[2]: int(predictor.builder.encode_note(s[1]).keep.sum()) for s in studies}
    short = [s for s in studies if n_tokens[s[2]] <= args.max_note_tokens]
    long_notes = [s for s in studies if n_tokens[s[2]] > args.max_note_tokens]

    cpu_times: list[float] = []

    def run(study: tuple[Path, str, str]) -> tuple[float, object]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = live_result(predictor, study[0], study[1], key=study[2])
        if device.type == "cuda":
            torch.cuda.synchronize()
        cpu_times.append((time.process_time() - cpu_start) * 1000.0)
        return (time.perf_counter() - start) * 1000.0, result

    for study in studies[: args.warmup]:
        run(study)

    def timed(group: list[tuple[Path, str, str]]) -> tuple[dict, object]:
        cpu_times.clear()
        times, last = [], None
        for _ in range(args.repeat):
            for study in group:
                ms, last = run(study)
                times.append(ms)
        if not times:
            return {"studies": 0}, None
        return {
            "studies": len(group), "timed_calls": len(times),
            "note_tokens_max": max(n_tokens[s[2]] for s in group),
            "p50_ms": round(float(np.percentile(times, 50)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1),
            "mean_ms": round(statistics.fmean(times), 1), "max_ms": round(max(times), 1),
            # CPU time of this process per call (all threads): on a shared machine, wall time includes waiting.
            "cpu_p50_ms": round(float(np.percentile(cpu_times, 50)), 1),
            "cpu_p95_ms": round(float(np.percentile(cpu_times, 95)), 1),
        }, last

    headline, last = timed(short)
    longer, _ = timed(long_notes)
    sample = predictor.prepare(studies[0][0], studies[0][1])
    figures = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)"),
        "model": str(args.model),
        "model_input": predictor.loaded.config.data.image_size,
        "original_image": list(sample.letterbox.orig_shape) if sample.letterbox else None,
        "labels_explained": len(last.labels) if last else 0,
        "heatmaps_per_study": len(last.heatmaps) if last else 0,
        "model_load_s": round(load_s, 2),
        f"notes_le_{args.max_note_tokens}_tokens": headline,
        f"notes_gt_{args.max_note_tokens}_tokens": longer,
        "load_average_1min": round(os.getloadavg()[0], 1), "cpu_count": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
