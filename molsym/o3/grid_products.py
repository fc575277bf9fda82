"""Products of functions on the sphere grid in one fused CPU kernel (``grid_products.cpp``).

:func:`grid_products` evaluates, for K factors given by their coefficients (integral
normalisation, degrees <= L) on a :class:`~molsym.o3.sphere_grid.GaussGrid` of band B,

    out = Proj_L [u_1 (1 + u_2 (1 + ... (1 + u_K')))],   u_K' = u_K + shift,

(the Horner form of Σ_ν u_1 ... u_ν when shift = 1) and its first derivatives, exactly as the
grid's ``values`` / ``project`` do (float64 to rounding), with the projection scaled by
``scale``. Per node and per 16 (float32) or 8 (float64) channels the kernel synthesises the
factors, multiplies them and projects the product without leaving the core's cache, where the
PyTorch path of the same operation makes ~20 passes over memory per chunk of nodes; the
backward recomputes the factors' values instead of storing them.

It serves eager CPU evaluation with float32 or float64 and first derivatives. Second
derivatives (training on forces, Hessians) differentiate the PyTorch path, recomputed from the
saved coefficients inside the backward: the same numbers, at the PyTorch path's speed. Use
:func:`native_products` to ask whether an input can take the kernel.
"""
from __future__ import annotations

import ctypes
import functools
import math
from typing import Callable

import torch

from molsym import native
from molsym.o3.sphere_grid import grid_size, grid_tables

SOURCE = "o3/grid_products.cpp"
_int64_3 = ctypes.c_int64 * 3


@functools.lru_cache(maxsize=1)
def _library():
    return native.load_functions(SOURCE, {"molsym_grid_products": "iippppppliiiiidpi"})


def available() -> bool:
    """Whether the kernel is built and loaded (see :func:`molsym.native.status`)."""
    return _library() is not None


def native_products(x: torch.Tensor) -> bool:
    """Whether a call on ``x`` takes the kernel: an eager call (no trace, compile or torch.func
    transform) on a CPU float32 / float64 tensor, with the kernel available."""
    return native.eager_cpu(x) and available()


def _halves(table: torch.Tensor, lmax: int, orders_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A φ table over (n_φ angles, 2L+1 orders) (or its transpose with ``orders_first``) -> the
    rows of angles j = 0..n_φ//2 for orders m >= 0 and m < 0. Checks the parity that lets the
    kernel pair φ_j with 2π - φ_j: even for m >= 0 (cosines), odd for m < 0 (sines)."""
    angles = table.T if orders_first else table  # (n_φ, M)
    n_phi = angles.shape[0]
    mirrored = angles[(-torch.arange(n_phi)) % n_phi]
    sign = torch.ones(2 * lmax + 1, dtype=angles.dtype)
    sign[:lmax] = -1
    if (mirrored - angles * sign).abs().max() > 1e-12 * max(1.0, float(angles.abs().max())):
        raise AssertionError("the φ table is not even in cos(mφ) and odd in sin(mφ)")
    half = angles[:n_phi // 2 + 1]
    even, odd = half[:, lmax:], half[:, :lmax]
    if orders_first:
        even, odd = even.T, odd.T
    return even.contiguous(), odd.contiguous()


class GridProductKernel:
    """The kernel's tables for products of degree <= ``lmax`` factors on the grid of ``band``,
    the projection scaled by ``scale``."""

    def __init__(self, band: int, lmax: int, scale: float = 1.0):
        self.band, self.lmax, self.scale = band, lmax, float(scale)
        self.n_theta, self.n_phi = grid_size(band)
        t = grid_tables(band, lmax)
        theta, phi = t["theta"], t["phi"].T  # (M, n_θ, L+1), (n_φ, M)
        analysis_theta, analysis_phi = t["analysis_theta"] * self.scale, t["analysis_phi"].T  # (M, L+1, n_θ), (M, n_φ)
        to_grid = lambda th, angles: (th.contiguous(), *_halves(angles, lmax, orders_first=False))  # noqa: E731
        from_grid = lambda th, orders: (th.contiguous(), *_halves(orders, lmax, orders_first=True))  # noqa: E731
        self._tables64 = [
            *to_grid(theta, phi),                                       # synthesis
            *from_grid(analysis_theta, analysis_phi),                   # projection
            *from_grid(theta.transpose(1, 2), phi.T),                   # adjoint of the synthesis
            *to_grid(analysis_theta.transpose(1, 2), analysis_phi.T),   # adjoint of the projection
        ]
        self._cast: dict[torch.dtype, tuple[list[torch.Tensor], ctypes.Array]] = {}

    def _tables(self, dtype: torch.dtype):
        if dtype not in self._cast:
            tables = [t.to(dtype).contiguous() for t in self._tables64]
            self._cast[dtype] = (tables, (ctypes.c_void_p * len(tables))(*[t.data_ptr() for t in tables]))
        return self._cast[dtype][1]

    def run(self, backward: bool, a: torch.Tensor, g: torch.Tensor | None, out: torch.Tensor, shift: float) -> None:
        """a (K, D, N, C) coefficients; forward: out (N, D, C); backward: g (N, D, C), out like a."""
        library = _library()
        if library is None:
            raise RuntimeError(f"the grid-product kernel is not available: {native.status(SOURCE)}")
        k, d, n, c = a.shape
        if d != (self.lmax + 1) ** 2 or a.stride(-1) != 1 or out.stride(-1) != 1:
            raise ValueError(f"grid products: expected (K, {(self.lmax + 1) ** 2}, N, C) coefficients with "
                             f"contiguous channels, got {tuple(a.shape)} strides {a.stride()}")
        a_strides = _int64_3(a.stride(2), a.stride(0), a.stride(1))
        if backward:
            if g.stride(-1) != 1:
                raise ValueError("grid products: the output gradient needs contiguous channels")
            if out.stride() != a.stride():
                raise ValueError("grid products: the factors' gradient needs the strides of the factors")
            g_strides, o_strides = _int64_3(g.stride(0), g.stride(1), 0), _int64_3(0, 0, 0)
        else:
            g_strides, o_strides = _int64_3(0, 0, 0), _int64_3(out.stride(0), out.stride(1), 0)
        library.molsym_grid_products(
            int(a.dtype == torch.float64), int(backward), a.data_ptr(), a_strides,
            None if g is None else g.data_ptr(), g_strides, out.data_ptr(), o_strides,
            n, k, self.lmax, self.n_theta, self.n_phi, c, float(shift), self._tables(a.dtype),
            torch.get_num_threads())


class _GridProducts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, kernel, shift, reference):
        out = a.new_empty(a.shape[2], a.shape[1], a.shape[3])
        kernel.run(False, a, None, out, shift)
        ctx.save_for_backward(a)
        ctx.kernel, ctx.shift, ctx.reference = kernel, shift, reference
        return out

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        if torch.is_grad_enabled() or not native.plain(g) or g.dtype != a.dtype:
            # a graph of the derivative is wanted (or a torch.func transform is active): differentiate
            # the PyTorch path, recomputed from the saved coefficients
            with torch.enable_grad():
                out = ctx.reference(a)
            (grad,) = torch.autograd.grad(out, a, g, create_graph=torch.is_grad_enabled())
            return grad, None, None, None
        grad = torch.empty_like(a)  # a's strides (dense, non-overlapping)
        ctx.kernel.run(True, a, g if g.stride(-1) == 1 else g.contiguous(), grad, ctx.shift)
        return grad, None, None, None


@functools.lru_cache(maxsize=None)
def product_kernel(band: int, lmax: int, scale: float = 1.0) -> GridProductKernel:
    """The (cached, process-wide) kernel tables of these sizes."""
    return GridProductKernel(band, lmax, scale)


def grid_products(a: torch.Tensor, kernel: GridProductKernel, shift: float,
                  reference: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Coefficients a (K, D, N, C) of the K factors -> (N, D, C) (see the module docstring).
    ``reference`` computes the same from ``a`` with differentiable PyTorch operations (used for
    second derivatives). Any strides with contiguous channels."""
    if a.dim() != 4 or a.shape[0] < 1:
        raise ValueError(f"grid products: expected (K, D, N, C) coefficients, got shape {tuple(a.shape)}")
    if not math.isfinite(shift):
        raise ValueError(f"grid products: shift must be finite, got {shift}")
    return _GridProducts.apply(a if a.stride(-1) == 1 else a.contiguous(), kernel, float(shift), reference)
