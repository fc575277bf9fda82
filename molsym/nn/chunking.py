"""How many values one chunk of an eager, batched evaluation may hold, per device.

On CPU, chunks of 2^18-2^19 values keep their temporaries in cache (the Gaunt product basis at
L = 4, 1,000 nodes: 0.5-0.75x the time of one pass). On a GPU every chunk costs its own kernel
launches (the same basis at 10,000 nodes on an H200: 92.9 ms in cache-sized chunks, 3.6 ms in one
pass), so there chunks only bound the memory of very large batches.
"""
from __future__ import annotations

import torch

GPU_CHUNK_VALUES = 1 << 27  # 512 MB per float32 temporary


def chunk_values(cpu_values: int, device: torch.device) -> int:
    """Values per chunk on ``device``: ``cpu_values`` on CPU, ``GPU_CHUNK_VALUES`` elsewhere."""
    return cpu_values if device.type == "cpu" else max(cpu_values, GPU_CHUNK_VALUES)


def chunk_length(count: int, per_item: int, cpu_values: int, device: torch.device) -> int | None:
    """Items per chunk when ``count`` items of ``per_item`` values each are evaluated eagerly in
    chunks of about :func:`chunk_values` values, or ``None`` for one pass: when they fit in one
    chunk, and in a trace or a compiled graph (a trace would freeze the example's number of chunks)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    size = max(1, chunk_values(cpu_values, device) // per_item)
    return None if count <= size else size
