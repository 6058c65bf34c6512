"""Training throughput of the full fused model vs the bare-encoder ceiling, measured in the same run.

    python benchmarks/train_throughput.py                       # default config (DenseNet121, 256 px, MiniLM)
    python benchmarks/train_throughput.py --demo --device cpu   # the CPU demo configuration

Prints samples/s for
  * fused:   the whole ClinmmModel training step (image encoder + text encoder + projections + fusion + joint loss,
             backward, gradient clipping, AdamW step), bf16 autocast + channels_last on CUDA;
  * ceiling: forward + backward of the bare encoders only (MONAI backbone ``forward_features`` and the text encoder
             on the same synthetic tensors, a trivial sum as loss, no optimizer), same precision/layout;
and the ratio fused / ceiling (acceptance on a GPU: ≥ 70 %). Inputs are synthetic tensors of the configured shapes
(no data loading), so the figure is the model's own cost. Run on a lent GPU with ``--device cuda``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


def _inputs(b: int, size: int, chunks: int, length: int, vocab: int, device: torch.device, dims: int):
    from clinmm.models.classifier import ModelInputs

    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 1, *(size,) * dims, generator=g)
    ids = torch.randint(1000, vocab - 1, (b, chunks, length), generator=g)
    ids[:, :, 0] = 101
    am = torch.ones(b, chunks, length, dtype=torch.long)
    am[b // 2 :, :, length * 3 // 4 :] = 0  # some padding, as real notes have
    keep = am.bool()
    inputs = ModelInputs(image=image, image_present=torch.ones(b, dtype=torch.bool), input_ids=ids,
                         attention_mask=am, keep=keep, text_present=torch.ones(b, dtype=torch.bool)).to(device)
    if device.type == "cuda":
        inputs.image = inputs.image.contiguous(memory_format=torch.channels_last if dims == 2
                                               else torch.channels_last_3d)
    labels = torch.randint(0, 2, (b, 5), generator=g).float().to(device)
    return inputs, labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    from clinmm.checkpoint import build_model
    from clinmm.config import ClinmmConfig, demo_config
    from clinmm.inference import autocast_for
    from clinmm.models.losses import joint_loss

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", action="store_true", help="CPU demo configuration instead of the default")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--length", type=int, default=None, help="tokens per chunk (default: text.max_length)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fusion", default="cross_attention")
    ap.add_argument("--unfreeze-text", action="store_true", help="train every text layer (demo freezes them)")
    args = ap.parse_args()

    cfg = demo_config() if args.demo else ClinmmConfig()
    if args.backbone:
        cfg.image.backbone = args.backbone
    if args.image_size:
        cfg.data.image_size = args.image_size
    if args.unfreeze_text:
        cfg.text.freeze_layers = 0
    cfg.fusion.method = args.fusion
    b = args.batch or cfg.train.batch_size
    length = args.length or cfg.text.max_length
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    labels = ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
    torch.manual_seed(0)
    model = build_model(cfg, labels).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last if cfg.image.spatial_dims == 2 else torch.channels_last_3d)
    vocab = int(model.text_encoder.tokenizer.vocab_size)
    inputs, targets = _inputs(b, cfg.data.image_size, args.chunks, length, vocab, device, cfg.image.spatial_dims)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def fused_step() -> None:
        with autocast_for(device):
            out = model(inputs)
        loss = joint_loss(out, targets, fusion=cfg.fusion, train=cfg.train)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def ceiling_step() -> None:
        with autocast_for(device):
            img = model.image_encoder.forward_features(inputs.image).tokens
            txt = model.text_encoder(inputs.input_ids, inputs.attention_mask, inputs.keep).tokens
            loss = img.float().mean() + txt.float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    t_ceiling = _time(ceiling_step, args.steps, args.warmup, device)
    t_fused = _time(fused_step, args.steps, args.warmup, device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} "
                                                                                    "threads)",
        "precision": "bf16 autocast + channels_last" if device.type == "cuda" else "fp32",
        "backbone": cfg.image.backbone, "image_size": cfg.data.image_size, "batch": b,
        "text_tokens": f"{args.chunks}x{length}", "text_frozen_layers": cfg.text.freeze_layers,
        "fusion": cfg.fusion.method, "steps": args.steps,
        "note": ("fused uses the frozen-text feature cache (demo) so it may exceed the ceiling; judge the 70 % "
                 "criterion on the default configuration") if cfg.text.freeze_layers else "",
        "fused_samples_per_s": round(b * args.steps / t_fused, 1),
        "ceiling_samples_per_s": round(b * args.steps / t_ceiling, 1),
    }
    result["fused_over_ceiling"] = round(result["fused_samples_per_s"] / result["ceiling_samples_per_s"], 3)
    result["pass_70pct"] = bool(result["fused_over_ceiling"] >= 0.70) if device.type == "cuda" else None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
