"""Data-parallel training under torchrun: process group set-up, sharding and the few collectives train() needs.

`synthcheck train` runs unchanged under `torchrun --nproc_per_node N` (and multi-node): torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) switches this on; without it everything
here is a no-op and training is the single-process loop. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """The one process that writes checkpoints, metrics and progress."""
        return self.rank == 0


def from_env() -> Context:
    return Context(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def init(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group torchrun describes; on CUDA each process takes the GPU of its local rank."""
    ctx = from_env()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":  # N processes share the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world))))
    return ctx, device


def shard(perm: torch.Tensor, ctx: Context, per_rank: int) -> torch.Tensor:
    """This rank's part of an epoch's global permutation: disjoint across ranks, equal sizes."""
    return perm[ctx.rank::ctx.world][:per_rank]


def all_sum(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def from_main(values: list[float], ctx: Context, device: torch.device) -> list[float]:
    """Rank 0's values on every rank, so decisions (best epoch, early stop) never diverge."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def close(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
