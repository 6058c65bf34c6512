"""Peak memory of integrated gradients at 50 vs 500 steps (chunked with ``internal_batch_size``), image and text.

Each configuration runs in a fresh Python process so peaks do not mix. On CPU the figure is the process's peak
resident memory during IG (sampled every 2 ms from ``/proc/self/statm`` by a thread; ``ru_maxrss`` would include the
model-loading peak) minus its resident memory just before IG (model loaded, sample prepared); on CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before IG. Chunked steps should stay flat (within 20 %);
the unchunked 50-step run is shown for contrast.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/explain_memory.py [--model runs/demo/checkpoint] [--device cpu]
        [--study path/to/IM0001.dcm] [--steps 50 500] [--internal-batch-size 16] [--json out.json]

Without ``--model`` an untrained model in the demo configuration is used (memory does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

NOTE = ("Indication: cough. History: patient reports fever for the last 4 days, treated with paracetamol at home. "
        "No chest pain. Exam: breath sounds reduced at the right base. Plan: chest radiograph, review.")


def _child(args: argparse.Namespace) -> dict:
    import threading

    import numpy as np
    import torch

    torch.manual_seed(0)
    if args.model:
        from clinmm.inference import Predictor

        predictor = Predictor.from_path(args.model, device=args.device)
    else:
        import tempfile

        from clinmm.calibration import LabelCalibration
        from clinmm.checkpoint import build_model, save_checkpoint
        from clinmm.config import demo_config
        from clinmm.inference import Predictor

        labels = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
        cfg = demo_config()
        tmp = tempfile.mkdtemp(prefix="clinmm-bench-")
        save_checkpoint(f"{tmp}/ckpt", model=build_model(cfg, labels), config=cfg, labels=labels,
                        calibration=[LabelCalibration() for _ in labels], scope={}, model_card={}, reference={})
        predictor = Predictor.from_path(f"{tmp}/ckpt", device=args.device)
    if args.study:
        image = args.study
    else:
        from clinmm.io.study import ImageVolume

        px = np.random.default_rng(0).random((1, 256, 256)).astype(np.float32)
        image = ImageVolume(pixels=px, display=px, modality="CR")
    sample = predictor.prepare(image, NOTE)
    inputs = predictor.collate([sample]).inputs
    net = predictor.loaded.model
    from clinmm.explain.attribution import integrated_gradients_image, integrated_gradients_text

    cuda = predictor.loaded.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    peak_rss = [before]
    done = threading.Event()

    def sample_rss() -> None:
        while not done.is_set():
            peak_rss[0] = max(peak_rss[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    if not cuda:
        sampler.start()
    ibs = None if args.internal_batch_size <= 0 else args.internal_batch_size
    t = time.perf_counter()
    if args.modality == "image":
        attr = integrated_gradients_image(net, inputs, label_index=0, n_steps=args.n_steps, internal_batch_size=ibs)
    else:
        attr = integrated_gradients_text(net, inputs, label_index=2, n_steps=args.n_steps, internal_batch_size=ibs,
                                         pad_id=predictor.pad_id)
    seconds = time.perf_counter() - t
    done.set()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        sampler.join()
        peak = max(peak_rss[0], _rss_bytes()) - before
    return {"modality": args.modality, "n_steps": args.n_steps, "internal_batch_size": ibs,
            "device": str(predictor.loaded.device), "peak_mib": round(peak / 2**20, 1), "seconds": round(seconds, 2),
            "attribution_sum": float(np.sum(attr))}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory (default: untrained demo-config model)")
    p.add_argument("--study", default=None, help="a DICOM file (default: a random 256×256 image)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, nargs="+", default=[50, 500])
    p.add_argument("--internal-batch-size", type=int, default=16)
    p.add_argument("--modalities", nargs="+", default=["image", "text"])
    p.add_argument("--no-unchunked", action="store_true", help="skip the unchunked 50-step contrast run")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--modality", default="image", help=argparse.SUPPRESS)
    p.add_argument("--n-steps", type=int, default=50, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    rows = []
    for modality in args.modalities:
        runs = [(s, args.internal_batch_size) for s in args.steps]
        if not args.no_unchunked:
            runs.append((min(args.steps), 0))
        for steps, ibs in runs:
            cmd = [sys.executable, __file__, "--child", "--modality", modality, "--n-steps", str(steps),
                   "--internal-batch-size", str(ibs), "--device", args.device]
            cmd += ["--model", args.model] if args.model else []
            cmd += ["--study", args.study] if args.study else []
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if out.returncode != 0:
                raise SystemExit(f"child failed ({modality}, {steps} steps):\n{out.stderr[-2000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{modality:5s} steps={steps:4d} internal_batch_size={str(row['internal_batch_size']):>4s} "
                  f"peak={row['peak_mib']:8.1f} MiB  time={row['seconds']:7.2f} s  device={row['device']}",
                  flush=True)
    for modality in args.modalities:
        chunked = {r["n_steps"]: r["peak_mib"] for r in rows if r["modality"] == modality and r["internal_batch_size"]}
        if len(chunked) >= 2:
            lo, hi = min(chunked), max(chunked)
            ratio = chunked[hi] / max(chunked[lo], 1e-9)
            print(f"{modality}: peak at {hi} steps / peak at {lo} steps = {ratio:.2f} "
                  f"({'flat, within 20 %' if ratio <= 1.2 else 'NOT flat'})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
