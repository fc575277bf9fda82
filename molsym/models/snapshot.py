"""A frozen copy of a model for inference (calculator, compiled path): the caller's model is never touched."""
from __future__ import annotations

import copy

import torch


def frozen_copy(model, device=None, dtype: torch.dtype | None = None):
    """A deep copy of ``model`` in eval mode with parameters that need no gradient, moved to
    ``device`` and cast to ``dtype`` when given."""
    snapshot = copy.deepcopy(model)
    if device is not None or dtype is not None:
        snapshot = snapshot.to(device=device, dtype=dtype)
    snapshot.eval()
    for parameter in snapshot.parameters():
        parameter.requires_grad_(False)
    return snapshot
