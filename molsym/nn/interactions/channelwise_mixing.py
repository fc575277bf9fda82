"""The channel-wise SO(2) mixing: one small matrix per (edge row, channel), applied in the frames.

For frames x (D, H, I, C) (H halves of the G-form, or 1) and weights W (R, O, I, C), one row
per pair of directed edges or per edge (D = copies x R, edge q R + r reads row r):

    channel_mix(W, x)[e, h, o, c]            = sum_i W[r, o, i, c] x[e, h, i, c]
    channel_mix(W, x, transpose=True)[e, h, i, c] = sum_o W[r, o, i, c] x[e, h, o, c]
    channel_outer(a, b, R)[r, o, i, c]       = sum over e = q R + r and h of a[e, h, o, c] b[e, h, i, c]

The three close under differentiation (the mix's gradients are the transposed mix and the
outer product, the outer product's are the two mixes), so derivatives of any order stay on them.
On the CPU, in eager mode, with float32 / float64, they run as fused kernels
(``channelwise_mixing.cpp``) with the channels as vector lanes, reading W and x in place (W at
any strides with contiguous channels); elsewhere (GPU, traces, ``torch.compile``, torch.func,
batched gradients, no compiler) as batched ``matmul`` over (row, channel).
"""
from __future__ import annotations

import ctypes
import functools

import torch

from molsym import native

SOURCE = "nn/interactions/channelwise_mixing.cpp"
_int64_3 = ctypes.c_int64 * 3


@functools.lru_cache(maxsize=1)
def _library():
    return native.load_functions(SOURCE, {"molsym_channelwise_mix": "ipppplliiiii",
                                          "molsym_channelwise_outer": "ippplliiiii"})


def available() -> bool:
    """Whether the kernels are built and loaded (see :func:`molsym.native.status`)."""
    return _library() is not None


def _copies(rows: int, edges: int) -> int:
    if rows == 0 and edges == 0:  # no edges at all
        return 1
    if rows < 1 or edges % rows:
        raise ValueError(f"channel-wise mixing: {edges} edge rows are not a multiple of {rows} weight rows")
    return edges // rows


class _Mix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, x, transpose):
        r, o, i, c = weights.shape
        d, h = x.shape[:2]
        n_out, n_in = (i, o) if transpose else (o, i)
        y = x.new_empty(d, h, n_out, c)
        strides = _int64_3(weights.stride(0), *(weights.stride(2), weights.stride(1)) if transpose
                           else (weights.stride(1), weights.stride(2)))
        _library().molsym_channelwise_mix(int(x.dtype == torch.float64), weights.data_ptr(), strides, x.data_ptr(),
                                          y.data_ptr(), d, r, h, n_out, n_in, c, torch.get_num_threads())
        ctx.save_for_backward(weights, x)
        ctx.transpose = transpose
        return y

    @staticmethod
    def backward(ctx, grad):
        weights, x = ctx.saved_tensors
        grad_x = channel_mix(weights, grad, not ctx.transpose) if ctx.needs_input_grad[1] else None
        grad_w = None
        if ctx.needs_input_grad[0]:
            rows = weights.shape[0]
            grad_w = channel_outer(x, grad, rows) if ctx.transpose else channel_outer(grad, x, rows)
        return grad_w, grad_x, None


class _Outer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, rows):
        d, h, n_a, c = a.shape
        g = a.new_empty(rows, n_a, b.shape[2], c)
        _library().molsym_channelwise_outer(int(a.dtype == torch.float64), a.data_ptr(), b.data_ptr(), g.data_ptr(),
                                            d, rows, h, n_a, b.shape[2], c, torch.get_num_threads())
        ctx.save_for_backward(a, b)
        return g

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = channel_mix(grad, b) if ctx.needs_input_grad[0] else None
        grad_b = channel_mix(grad, a, transpose=True) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def _kernel(*tensors: torch.Tensor) -> bool:
    return native.eager_cpu(*tensors) and available()


def channel_mix(weights: torch.Tensor, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Per (edge, half, channel) the matrix of the edge's row: weights (R, O, I, C), x (D, H, I, C)
    -> (D, H, O, C) (``transpose``: x (D, H, O, C) -> (D, H, I, C) with the transposed matrices)."""
    r, o, i, c = weights.shape
    d, h, n_in, cx = x.shape
    if not torch.jit.is_tracing() and (n_in != (o if transpose else i) or cx != c):
        raise ValueError(f"channel-wise mixing: weights {tuple(weights.shape)} do not fit frames {tuple(x.shape)}"
                         f"{' (transposed)' if transpose else ''}")
    copies = _copies(r, d)
    if _kernel(weights, x):
        return _Mix.apply(weights if weights.stride(-1) == 1 else weights.contiguous(), x.contiguous(), transpose)
    matrices = weights.permute(0, 3, 2, 1) if transpose else weights.permute(0, 3, 1, 2)  # (R, C, out, in)
    frames = x.reshape(copies, r, h, n_in, c).permute(0, 1, 4, 3, 2)  # (copies, R, C, in, H)
    return (matrices @ frames).permute(0, 1, 4, 3, 2).reshape(d, h, i if transpose else o, c)


def channel_outer(a: torch.Tensor, b: torch.Tensor, rows: int) -> torch.Tensor:
    """a (D, H, O, C), b (D, H, I, C) -> (rows, O, I, C): per weight row and channel, the sum over its
    edges and halves of a b^T (the weights' gradient of :func:`channel_mix`)."""
    d, h, o, c = a.shape
    if not torch.jit.is_tracing() and (b.shape[:2] != a.shape[:2] or b.shape[3] != c):
        raise ValueError(f"channel-wise outer product: {tuple(a.shape)} and {tuple(b.shape)} do not fit")
    copies = _copies(rows, d)
    if _kernel(a, b):
        return _Outer.apply(a.contiguous(), b.contiguous(), int(rows))
    left = a.reshape(copies, rows, h, o, c).permute(1, 4, 3, 0, 2).reshape(rows, c, o, copies * h)
    i = b.shape[2]
    right = b.reshape(copies, rows, h, i, c).permute(1, 4, 0, 2, 3).reshape(rows, c, copies * h, i)
    return (left @ right).permute(0, 2, 3, 1)
