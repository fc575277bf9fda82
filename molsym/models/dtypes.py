"""Floating-point dtypes: names accepted across the package, and the dtype and device of a model."""
from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype) -> torch.dtype:
    """'float32' | 'float64' | torch.float32 | torch.float64 -> the torch dtype; ValueError otherwise."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64' (or the torch dtype), got {dtype!r}")


def model_dtype_device(model) -> tuple[torch.dtype, torch.device]:
    """Floating dtype and device of the model's parameters (or buffers)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    raise ValueError("the model has no floating-point parameters or buffers; cannot tell its dtype")
