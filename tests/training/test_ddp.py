"""``torchrun --nproc_per_node 2`` (gloo, CPU): both ranks end with identical weights, equal within 1e-5 to one
process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "ddp_worker.py"


def _torchrun(n: int, text_dir: Path, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", str(WORKER),
           str(text_dir), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path, tiny_text_dir):
    from safetensors.torch import load_file

    _torchrun(2, tiny_text_dir, tmp_path)
    _torchrun(1, tiny_text_dir, tmp_path)
    r0 = load_file(str(tmp_path / "world2_rank0.safetensors"))
    r1 = load_file(str(tmp_path / "world2_rank1.safetensors"))
    single = load_file(str(tmp_path / "world1_rank0.safetensors"))
    assert r0.keys() == single.keys()
    changed = 0
    init = None
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ at {k}"
        assert torch.allclose(r0[k].float(), single[k].float(), atol=1e-5, rtol=0), \
            f"{k}: max |Δ| {(r0[k].float() - single[k].float()).abs().max():.2e}"
    # the run really trained (weights moved away from a fresh initialisation of the same seed)
    sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
    from clinmm_tiny import LABELS, tiny_config

    from clinmm.checkpoint import build_model
    from clinmm.train import seed_everything

    seed_everything(0)
    init = build_model(tiny_config(tiny_text_dir, backbone="vit"), LABELS).state_dict()
    changed = sum(not torch.equal(init[k], r0[k]) for k in r0 if k in init)
    assert changed > 10
