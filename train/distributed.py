"""Data-parallel context: one process per device, started by ``torchrun`` (gloo on CPU, nccl on GPU).

A run without torchrun's environment (``WORLD_SIZE`` unset or 1) is a
world of one: every helper here then works without ``torch.distributed``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs and checkpoints and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: str) -> World:
    """Join the process group that torchrun describes in the environment (no-op for a single process).

    ``device`` ("cpu" or "cuda...") chooses the backend: gloo for CPU, nccl for CUDA.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank=rank, size=size, local_rank=local_rank)


def resolve_device(name: str, world: World) -> torch.device:
    """The torch device of this rank: ``auto`` is CUDA when available; each rank takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available")
        if world.distributed:
            return torch.device("cuda", world.local_rank)
    return torch.device(name)


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (in place; returned for chaining)."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(value: bool, world: World, device: torch.device) -> bool:
    """Rank 0's ``value`` on every rank (e.g. "stop now: the time budget is spent")."""
    if not world.distributed:
        return value
    flag = torch.tensor([1.0 if value else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def broadcast_number(value: float, world: World, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (e.g. the seconds spent, which each rank's clock measures a little
    differently)."""
    if not world.distributed:
        return value
    number = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(number, src=0)
    return float(number.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    """Leave the process group (when this process joined one)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
