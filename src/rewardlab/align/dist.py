"""Data parallelism under ``torchrun`` for the recipes: rank r holds the global sample
indices ``r, r+W, r+2W, ...`` of an epoch; rewards are gathered so every rank computes the
same advantages, gradients are averaged, and ``param_spread`` checks the ranks agree."""

from __future__ import annotations

import dataclasses
import os

import torch


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(device: str) -> tuple[Dist, str]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group — NCCL on CUDA, gloo on
    CPU — and give each rank its own GPU; otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world), device


def gather(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Rank r holds global indices ``r, r+W, r+2W, ...``; returns all of them in global order."""
    if d.world == 1:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts, 1).reshape(-1, *x.shape[1:])


def average_grads(params: list[torch.nn.Parameter], d: Dist) -> None:
    if d.world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= d.world


def all_mean(values: dict[str, float], d: Dist, keys=None) -> dict[str, float]:
    """The mean over ranks of each value. With ``keys`` (the same on every rank), a rank may
    lack some of them (it had nothing to measure): each key is averaged over the ranks that
    have it, and left out where none has."""
    if d.world == 1:
        return values
    import torch.distributed as dist

    keys = sorted(values if keys is None else keys)
    if not keys:
        return {}
    t = torch.tensor([[values.get(k, 0.0), float(k in values)] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(s) / float(n) for k, (s, n) in zip(keys, t) if n}


def param_spread(params, d: Dist) -> float:
    """The largest difference between ranks of any parameter (0.0: all ranks hold the same
    weights, as averaged gradients and identical optimiser steps should give)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in params])
    lo, hi = flat.clone(), flat.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return float((hi - lo).max())


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
