"""Node features rotated into per-edge frames and back, the gather and the sum fused in.

With one matrix R_e (K, P) per directed edge e (for example Wigner-D rows taking the edge onto
the polar axis) and an index ``idx`` (D,) naming each edge's node:

    rotate_into(R, x, idx)[e]       = R_e x[idx_e]                      (D, K, C)
    rotate_out_of(R, f, idx, N)[n]  = sum over e with idx_e = n of R_e^T f_e   (N, P, C)

On the CPU, in eager mode, with float32 or float64, both run as fused kernels
(``edge_rotation.cpp``): no gathered (D, P, C) copy of the node features and no rotated-back
(D, P, C) messages are written, and the sum visits each node's edges in a fixed order (the same
numbers for any number of threads). Elsewhere (GPU, traces, ``torch.compile``, torch.func
transforms, autograd's batched gradients, or without a compiler) the same operations run as
``bmm`` with ``index_select`` / ``index_add``. The two are each other's adjoint, so every
derivative, to any order, is again one of them or the rotations' gradient
R̄_e = ȳ_e x[idx_e]^T (:func:`edge_outer`, also a kernel), whose derivatives are the first two.
"""
from __future__ import annotations

import ctypes
import functools

import torch

from molsym import native
from molsym.nn.scatter import scatter_sum

SOURCE = "o3/edge_rotation.cpp"
_int64_2 = ctypes.c_int64 * 2


@functools.lru_cache(maxsize=1)
def _library():
    return native.load_functions(SOURCE, {"molsym_rotate_into": "ippppplliiii", "molsym_rotate_out_of": "ippppplliiii",
                                          "molsym_edge_outer": "ipppplliiii"})


def available() -> bool:
    """Whether the kernels are built and loaded (see :func:`molsym.native.status`)."""
    return _library() is not None


def _kernel(*tensors: torch.Tensor) -> bool:
    return native.eager_cpu(*tensors) and available()


def _check(rotation: torch.Tensor, features: torch.Tensor, index: torch.Tensor, node_side: bool) -> None:
    if rotation.dim() != 3 or features.dim() != 3 or index.dim() != 1:
        raise ValueError(f"edge rotation: expected rotations (D, K, P), features (N or D, rows, C) and an index "
                         f"(D,), got shapes {tuple(rotation.shape)}, {tuple(features.shape)}, {tuple(index.shape)}")
    d, k, p = rotation.shape
    rows = p if node_side else k
    if index.shape[0] != d or features.shape[1] != rows or (not node_side and features.shape[0] != d):
        raise ValueError(f"edge rotation: rotations {tuple(rotation.shape)} do not fit features "
                         f"{tuple(features.shape)} and index {tuple(index.shape)}")
    if index.dtype != torch.long:
        raise TypeError(f"edge rotation: the index must be int64, got {index.dtype}")


def _run(name: str, *args) -> None:
    if getattr(_library(), name)(*args) != 0:
        raise IndexError("edge rotation: an index lies outside the nodes")


class _RotateInto(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rotation, x, index):
        d, k, p = rotation.shape
        n, c = x.shape[0], x.shape[2]
        y = x.new_empty(d, k, c)
        _run("molsym_rotate_into", int(x.dtype == torch.float64), rotation.data_ptr(), x.data_ptr(),
             _int64_2(x.stride(0), x.stride(1)), index.data_ptr(), y.data_ptr(), d, n, k, p, c,
             torch.get_num_threads())
        ctx.save_for_backward(rotation, x, index)
        return y

    @staticmethod
    def backward(ctx, grad):
        rotation, x, index = ctx.saved_tensors
        grad_rotation = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = rotate_out_of(rotation, grad, index, x.shape[0])
        if ctx.needs_input_grad[0]:
            grad_rotation = edge_outer(grad, x, index)
        return grad_rotation, grad_x, None


class _RotateOutOf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rotation, frames, index, num_nodes):
        d, k, p = rotation.shape
        c = frames.shape[2]
        z = frames.new_empty(num_nodes, p, c)
        _run("molsym_rotate_out_of", int(frames.dtype == torch.float64), rotation.data_ptr(), frames.data_ptr(),
             index.data_ptr(), z.data_ptr(), _int64_2(z.stride(0), z.stride(1)), d, num_nodes, k, p, c,
             torch.get_num_threads())
        ctx.save_for_backward(rotation, frames, index)
        return z

    @staticmethod
    def backward(ctx, grad):
        rotation, frames, index = ctx.saved_tensors
        grad_rotation = grad_frames = None
        if ctx.needs_input_grad[1]:
            grad_frames = rotate_into(rotation, grad, index)
        if ctx.needs_input_grad[0]:
            grad_rotation = edge_outer(frames, grad, index)
        return grad_rotation, grad_frames, None, None


class _EdgeOuter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, index):
        d, k, c = a.shape
        n, p = b.shape[:2]
        transposed = b.transpose(1, 2).contiguous()  # (N, C, P): vectors along the node rows
        g = a.new_empty(d, k, p)
        _run("molsym_edge_outer", int(a.dtype == torch.float64), a.data_ptr(), transposed.data_ptr(),
             index.data_ptr(), g.data_ptr(), d, n, k, p, c, torch.get_num_threads())
        ctx.save_for_backward(a, b, index)
        return g

    @staticmethod
    def backward(ctx, grad):
        a, b, index = ctx.saved_tensors
        grad_a = rotate_into(grad, b, index) if ctx.needs_input_grad[0] else None
        grad_b = rotate_out_of(grad, a, index, b.shape[0]) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def rotate_into(rotation: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Node features x (N, P, C) into the edges' frames: R_e x[index_e], (D, K, C).

    rotation (D, K, P); index (D,) int64. x may be a strided view with contiguous channels.
    """
    if not torch.jit.is_tracing():  # shapes are fixed in a trace
        _check(rotation, x, index, node_side=True)
    if _kernel(rotation, x):  # the kernel reads contiguous rotations and channels
        return _RotateInto.apply(rotation.contiguous(), x if x.stride(-1) == 1 else x.contiguous(), index.contiguous())
    return torch.bmm(rotation, x.index_select(0, index))


def edge_outer(a: torch.Tensor, b: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The rotations' gradient of :func:`rotate_into` and :func:`rotate_out_of`: per edge
    a_e b[index_e]^T, (D, K, P), from a (D, K, C) on the edges and b (N, P, C) on the nodes."""
    if not torch.jit.is_tracing() and (a.dim() != 3 or b.dim() != 3 or a.shape[2] != b.shape[2]
                                       or index.shape != (a.shape[0],)):
        raise ValueError(f"edge outer product: expected a (D, K, C), b (N, P, C) and an index (D,), got shapes "
                         f"{tuple(a.shape)}, {tuple(b.shape)}, {tuple(index.shape)}")
    if index.dtype != torch.long:
        raise TypeError(f"edge outer product: the index must be int64, got {index.dtype}")
    if _kernel(a, b):
        return _EdgeOuter.apply(a.contiguous(), b, index.contiguous())
    return torch.bmm(a, b.index_select(0, index).transpose(1, 2))


def rotate_out_of(rotation: torch.Tensor, frames: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Edge frames f (D, K, C) rotated back and summed onto nodes: sum_e R_e^T f_e at index_e,
    (num_nodes, P, C). rotation (D, K, P); index (D,) int64."""
    if not torch.jit.is_tracing():
        _check(rotation, frames, index, node_side=False)
    if _kernel(rotation, frames):
        return _RotateOutOf.apply(rotation.contiguous(), frames.contiguous(), index.contiguous(), int(num_nodes))
    return scatter_sum(torch.bmm(rotation.transpose(1, 2), frames), index, num_nodes)
