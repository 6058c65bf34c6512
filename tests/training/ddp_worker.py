"""Worker for tests/training/test_ddp.py: ``torchrun --nproc_per_node N ddp_worker.py TEXT_DIR OUT``.

Trains the tiny model on the same in-memory samples with the same GLOBAL batch and writes this rank's final weights
to OUT/rank<r>.safetensors. (A test script may read torchrun's environment; the library never does.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))

from clinmm_tiny import LABELS, make_samples, tiny_config


def main() -> None:
    from safetensors.torch import save_file

    from clinmm.checkpoint import build_model
    from clinmm.train import fit, seed_everything
    from clinmm.training.ddp import DistContext, cleanup_distributed, init_distributed

    torch.set_num_threads(1)
    text_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    ctx = DistContext(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                      local_rank=int(os.environ.get("LOCAL_RANK", "0")), backend="gloo")
    cfg = tiny_config(text_dir, backbone="vit", epochs=2, batch_size=8, lr_head=3e-4, lr_encoder=3e-4)
    cfg.fusion.modality_dropout = 0.3  # drawn per global position: identical for any number of ranks
    device = torch.device("cpu")
    init_distributed(ctx, device)
    seed_everything(0)
    model = build_model(cfg, LABELS)
    tok = model.text_encoder.note_tokenizer()
    train = make_samples(tok, 24, seed=0)
    val = make_samples(tok, 8, seed=1)
    result = fit(model, train, val, config=cfg, device=device, pad_id=0, dist=ctx, progress=False)
    last = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(last, str(out / f"world{ctx.world_size}_rank{ctx.rank}.safetensors"))
    assert len(result.history) == 2
    cleanup_distributed(ctx)


if __name__ == "__main__":
    main()
