"""Sum-scatter of edge quantities onto nodes.

Native ``index_add_`` is the default; torch_scatter (optional extra ``scatter``)
is used when installed and enabled with :func:`use_torch_scatter`. Both are
deterministic on CPU and differentiable to any order.
"""
from __future__ import annotations

import torch

try:  # optional extra
    import torch_scatter as _torch_scatter
except ImportError:  # pragma: no cover - depends on the environment
    _torch_scatter = None

_BACKEND = {"name": "native"}


def torch_scatter_available() -> bool:
    """True when the optional torch_scatter package can be imported."""
    return _torch_scatter is not None


def use_torch_scatter(enabled: bool) -> None:
    """Select torch_scatter (``True``) or native ``index_add_`` (``False``)."""
    if enabled and _torch_scatter is None:
        raise RuntimeError(
            "torch_scatter is not installed; install molsym[scatter] "
            "(pip install --no-build-isolation torch-scatter) or keep the native backend"
        )
    _BACKEND["name"] = "torch_scatter" if enabled else "native"


def scatter_backend() -> str:
    """Name of the active backend: ``"native"`` or ``"torch_scatter"``."""
    return _BACKEND["name"]


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` (E, ...) into ``dim_size`` rows by ``index`` (E,)."""
    if _BACKEND["name"] == "torch_scatter":
        return _torch_scatter.scatter_sum(src, index, dim=0, dim_size=dim_size)
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)
