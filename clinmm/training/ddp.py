"""Data-parallel training with ``torchrun --nproc_per_node N`` (DDP; NCCL on CUDA, gloo on CPU).

The CLI reads torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and passes a :class:`DistContext`; library code
never reads the environment itself (``init_process_group`` uses torch's ``env://`` rendezvous that torchrun sets up).

Semantics (what makes N processes equal one): ``train.batch_size`` is the GLOBAL batch. Every rank draws the same
seeded permutation and takes its own contiguous share of each global batch; loss terms are divided by the known-cell
counts summed over ranks and multiplied by N, so DDP's gradient average equals the single-process gradient of the
whole batch. Modality dropout and augmentation are drawn per sample from (seed, epoch, index), independent of the
rank layout. BatchNorm statistics are per rank on CPU (SyncBatchNorm needs CUDA; it is used there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "all_reduce_sum",
    "broadcast_floats",
    "cleanup_distributed",
    "init_distributed",
    "shard_slice",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel run.

    Args:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
        backend: ``gloo`` (CPU) or ``nccl`` (CUDA); ``auto`` picks by device.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "auto"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (no-op for a single process or when already initialised)."""
    if not ctx.enabled or dist.is_initialized():
        return
    backend = ctx.backend if ctx.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
    logger.info("DDP: rank %d of %d joined (%s)", ctx.rank, ctx.world_size, backend)


def cleanup_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: list[torch.Tensor], ctx: DistContext) -> list[torch.Tensor]:
    """Sum 0-dim tensors over ranks (one collective); identity for a single process."""
    if not ctx.enabled:
        return values
    stacked = torch.stack([v.detach().float() for v in values])  # (T,)
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return list(stacked.unbind(0))


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU under NCCL, else the CPU (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_floats(values: list[float], ctx: DistContext) -> list[float]:
    """Rank 0's ``values`` on every rank (a float64 tensor broadcast; no pickling)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.broadcast(t, src=0)
    return [float(v) for v in t.cpu()]


def shard_slice(n: int, ctx: DistContext) -> slice:
    """This rank's contiguous share of a global batch of ``n`` samples (shares differ by at most one)."""
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return slice(start, start + base + (1 if ctx.rank < extra else 0))
