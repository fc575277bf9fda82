"""Batch samplers that split each *global* batch over the ranks, so any number of ranks sees the same batches.

Training: epoch e shuffles the structures with a generator seeded by
(seed, e); global batch k is positions k*B .. (k+1)*B - 1 of that order, and
rank r of R takes every R-th structure of it, starting at r. One process (R = 1)
therefore trains on exactly the union of what R processes train on together
in each step. A last global batch with fewer structures than ranks is
dropped (a rank with nothing to do would stall the gradient exchange).

Evaluation: rank r takes structures r, r + R, ... in order, without padding
or repeats, so metrics summed over ranks cover every structure once.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled training batches: this rank's share of each global batch of ``batch_size`` structures."""

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if batch_size < world_size:
            raise ValueError(f"data.batch_size ({batch_size}) is the global batch and must be at least the "
                             f"number of processes ({world_size})")
        self.length, self.batch_size = int(length), int(batch_size)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.epoch = 0
        self.start_step = 0
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Choose the epoch's order, and skip its first ``start_step`` batches (resuming mid-epoch)."""
        self.epoch, self.start_step = int(epoch), int(start_step)

    def global_batches(self) -> list[list[int]]:
        """This epoch's global batches (lists of dataset positions)."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, self.length, self.batch_size)]
        if batches and len(batches[-1]) < self.world_size:
            batches.pop()
        self._cached = (self.epoch, batches)
        return batches

    def __iter__(self):
        for batch in self.global_batches()[self.start_step:]:
            yield batch[self.rank::self.world_size]

    def __len__(self) -> int:
        return max(0, len(self.global_batches()) - self.start_step)

    def steps_per_epoch(self) -> int:
        return len(self.global_batches())


class ShardSampler(Sampler[list[int]]):
    """Evaluation batches of this rank's shard (structures rank, rank + R, ...), in order."""

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, int(length), world_size))
        self.batch_size = int(batch_size)

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start:start + self.batch_size]

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size
