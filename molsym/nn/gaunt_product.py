"""The Gaunt tensor product as a learnable module, batched over nodes or edges and channels.

    GauntTensorProduct(L1, L2, Lout, channels, parity, backend)(x1, x2) -> y

x1 (..., (L1+1)², C), x2 (..., (L2+1)², C) coefficients (e3nn order, integral normalisation,
channel-wise: channel c of x1 meets channel c of x2). With per-degree weights u1 (L1+1, C),
u2 (L2+1, C) applied to the operands and w (Lout+1, C) to the result:

* parity ``"even"``: y = w · Proj_Lout[(u1 x1)(u2 x2)], the Gaunt product (every path with
  l1 + l2 + l3 even, ``molsym.o3.gaunt``), (..., (Lout+1)², C);
* ``"odd"``: y = w' · Proj_Lout {u1 x1, u2 x2}, the Poisson bracket (the paths with
  l1 + l2 + l3 odd, a pseudo-product: it picks up det R under improper rotations);
* ``"both"``: the two stacked, (..., 2, (Lout+1)², C) (index 0 even, 1 odd).

Backends: ``"grid"`` (``molsym.o3.sphere_grid``, Gauss-Legendre x uniform, band L1+L2+Lout),
``"fft"`` (``molsym.o3.fourier2d``, 2D Fourier basis and FFT), ``"auto"``: "grid", the
faster at every L measured on CPU (benchmarks/bench_gaunt.py, benchmarks/results/gaunt_cpu.json:
fft/grid time ratio 1.3-3.6 at L = 1..10 with 1 channel, 1.7-4.2 at L = 1..8 with 16;
gaunt_cpu_paired.json, medians of back-to-back pairs: 1.8-2.3 at L = 6, 8, 10 with 1 and 16
channels; forward and backward, batch 10,000). The weights start at 1 (the plain product).
Eager calls take the batch in chunks of about ``CHUNK_VALUES`` grid values on CPU, so that a
chunk's values stay in cache (far larger ones on a GPU, ``molsym.nn.chunking``); a trace or a
compiled graph takes one pass.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from molsym.nn.chunking import chunk_length
from molsym.o3.fourier2d import TorusGrid
from molsym.o3.sphere_grid import GaussGrid

PARITIES = ("even", "odd", "both")
BACKENDS = ("grid", "fft", "auto")


def make_sampler(backend: str, degree: int, lmax_out: int, degrees):
    """The grid (``"grid"``/``"auto"``) or torus (``"fft"``) exact for products of degree <= ``degree``
    projected on degrees <= ``lmax_out``, synthesising the degrees in ``degrees``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "fft":
        return TorusGrid(degree, lmax_out, degrees)
    return GaussGrid(degree + lmax_out, set(degrees) | {lmax_out})


def degree_index(lmax: int) -> torch.Tensor:
    """(D,) int64 degree of each component l² + m."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


def per_degree(x: torch.Tensor, weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (..., D, C) times weight (L+1, C) of each component's degree."""
    return x * weight.index_select(0, index)


class GauntTensorProduct(nn.Module):
    """See the module docstring."""

    CHUNK_VALUES = 1 << 19

    def __init__(self, lmax1: int, lmax2: int, lmax_out: int, channels: int, parity: str = "even",
                 backend: str = "auto"):
        super().__init__()
        for name, value in (("lmax1", lmax1), ("lmax2", lmax2), ("lmax_out", lmax_out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if parity not in PARITIES:
            raise ValueError(f"parity must be one of {PARITIES}, got {parity!r}")
        if lmax_out > lmax1 + lmax2:
            raise ValueError(f"lmax_out {lmax_out} exceeds lmax1 + lmax2 = {lmax1 + lmax2}: those degrees are zero")
        self.lmax1, self.lmax2, self.lmax_out, self.parity = lmax1, lmax2, lmax_out, parity
        self.backend = "grid" if backend == "auto" else backend
        self.sampler = make_sampler(backend, lmax1 + lmax2, lmax_out, {lmax1, lmax2})
        self.weight1 = nn.Parameter(torch.ones(lmax1 + 1, channels))
        self.weight2 = nn.Parameter(torch.ones(lmax2 + 1, channels))
        self.weight_even = nn.Parameter(torch.ones(lmax_out + 1, channels)) if parity != "odd" else None
        self.weight_odd = nn.Parameter(torch.ones(lmax_out + 1, channels)) if parity != "even" else None
        for name, l in (("index1", lmax1), ("index2", lmax2), ("index_out", lmax_out)):
            self.register_buffer(name, degree_index(l), persistent=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """x1 (..., (L1+1)², C), x2 (..., (L2+1)², C) -> (..., (Lout+1)², C) or (..., 2, (Lout+1)², C)."""
        d1, d2, c = (self.lmax1 + 1) ** 2, (self.lmax2 + 1) ** 2, self.weight1.shape[1]
        if x1.shape[-2:] != (d1, c) or x2.shape[-2:] != (d2, c):
            raise ValueError(f"expected operands (..., {d1}, {c}) and (..., {d2}, {c}), got "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}")
        x1 = per_degree(x1, self.weight1, self.index1)
        x2 = per_degree(x2, self.weight2, self.index2)
        lead = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
        n = math.prod(lead)
        size = chunk_length(n, self.sampler.num_points * c, self.CHUNK_VALUES, x1.device)
        if size is None:
            return self._product(x1, x2)
        # split, not sliced per chunk: the backward of a split is one concatenation
        pieces = zip(x1.expand(*lead, d1, c).reshape(n, d1, c).split(size),
                     x2.expand(*lead, d2, c).reshape(n, d2, c).split(size))
        out = torch.cat([self._product(a, b) for a, b in pieces])
        return out.reshape(*lead, *out.shape[1:])

    def _product(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The products of weighted operands (see ``forward``), in one pass."""
        sampler, out = self.sampler, []
        if self.weight_even is not None:
            values = sampler.values(x1, self.lmax1) * sampler.values(x2, self.lmax2)
            out.append(per_degree(sampler.project(values, self.lmax_out), self.weight_even, self.index_out))
        if self.weight_odd is not None:
            values = sampler.bracket_values(sampler.gradient(x1, self.lmax1), sampler.gradient(x2, self.lmax2))
            out.append(per_degree(sampler.project_bracket(values, self.lmax_out), self.weight_odd, self.index_out))
        return out[0] if len(out) == 1 else torch.stack(out, dim=-3)

    def extra_repr(self) -> str:
        return f"{self.lmax1} x {self.lmax2} -> {self.lmax_out}, parity={self.parity}, backend={self.backend}"
