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
