"""Functions on the sphere as values on a Gauss-Legendre (cos θ) x uniform φ grid ("grid" backend).

A :class:`GaussGrid` of band B has n_θ = B // 2 + 1 Gauss-Legendre nodes in cos θ (exact for
polynomials in cos θ of degree <= 2 n_θ - 1 >= B) and n_φ = B + 1 uniform angles (exact for
trigonometric polynomials in φ of degree <= B), so the quadrature of a spherical polynomial of
degree <= B is exact. The product of two functions of degrees L1, L2 projected onto degrees
<= Lout needs B >= L1 + L2 + Lout; the Poisson bracket (degree L1 + L2 - 1) too.

Coefficients (..., D, C) with D = (L + 1)² (e3nn's component order, integral normalisation of
``molsym.o3.sphere``, channels last) <-> values (..., P, C), P = n_θ n_φ (φ-major):

* synthesis: per order m, the Legendre sum over degrees Σ_l Θ_l^|m|(θ_i) a_lm, then the φ
  transform Σ_m Φ_m(φ_j) (one batched matrix product each, O(L^3) per channel);
* analysis: the transposes, weighted by the quadrature weights w_i (2π / n_φ).

The φ transform is a matrix product with the (2L+1, n_φ) table of Φ_m(φ_j), not an rfft: at
these lengths (n_φ <= 31) the product is faster on CPU (measured on one shared thread, batch
10,000 x 16 channels, band 3L: at L = 4 and 8 the matrix product took 0.37x and 0.43x the time
of torch.fft.irfft with its zero-padding and complex packing).

The tables are computed once in float64 (cached per (band, L)) and held as non-persistent
buffers, so ``module.to(dtype)`` casts them and checkpoints do not carry them.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from molsym.o3.sphere import (
    azimuthal, legendre_theta, order_gather_index, order_scatter_index, per_order,
)


def grid_size(band: int) -> tuple[int, int]:
    """(n_θ, n_φ) of the smallest grid of this family exact for degree <= band."""
    if isinstance(band, bool) or not isinstance(band, int) or band < 0:
        raise ValueError(f"band must be an integer >= 0, got {band!r}")
    return band // 2 + 1, band + 1


@functools.lru_cache(maxsize=None)
def gauss_grid(band: int) -> dict[str, torch.Tensor]:
    """Nodes of the grid of ``band`` (float64): cos θ_i, sin θ_i, weights w_i (n_θ,) of
    ∫_0^π f sin θ dθ, angles φ_j (n_φ,), and per point (φ-major: point j n_θ + i) the Cartesian
    r̂, e_θ, e_φ (P, 3)."""
    n_theta, n_phi = grid_size(band)
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    cos = torch.tensor(nodes, dtype=torch.float64)
    sin = torch.sqrt(1.0 - cos * cos)
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    c, s = cos[None, :].expand(n_phi, -1), sin[None, :].expand(n_phi, -1)  # (n_φ, n_θ): φ-major points
    sp, cp = torch.sin(phi)[:, None].expand(-1, n_theta), torch.cos(phi)[:, None].expand(-1, n_theta)
    point = torch.stack((s * sp, c, s * cp), -1).reshape(-1, 3)
    e_theta = torch.stack((c * sp, -s, c * cp), -1).reshape(-1, 3)
    e_phi = torch.stack((cp, torch.zeros_like(cp), -sp), -1).reshape(-1, 3)
    return {"cos": cos, "sin": sin, "weights": torch.tensor(weights, dtype=torch.float64), "phi": phi,
            "points": point, "e_theta": e_theta, "e_phi": e_phi}


@functools.lru_cache(maxsize=None)
def grid_tables(band: int, lmax: int) -> dict[str, torch.Tensor]:
    """Float64 tables for degrees <= lmax on the grid of ``band`` (M = 2 lmax + 1 orders):

    theta (M, n_θ, L+1): Θ_l^|m|(θ_i); dtheta: dΘ/dθ; theta_over_sin: Θ / sin θ;
    phi (M, n_φ): Φ_m(φ_j); dphi: dΦ/dφ;
    analysis_theta (M, L+1, n_θ): w_i Θ_l^|m|(θ_i); analysis_phi (n_φ, M): (2π/n_φ) Φ_m(φ_j).
    """
    grid = gauss_grid(band)
    theta, dtheta = legendre_theta(lmax, grid["cos"], grid["sin"], derivative=True)  # (n_θ, l, m)
    theta, dtheta = per_order(theta, lmax), per_order(dtheta, lmax)  # (M, n_θ, l)
    phi, dphi = azimuthal(lmax, grid["phi"], derivative=True)  # (n_φ, M)
    n_phi = grid["phi"].shape[0]
    return {
        "theta": theta, "dtheta": dtheta, "theta_over_sin": theta / grid["sin"][None, :, None],
        "phi": phi.T.contiguous(), "dphi": dphi.T.contiguous(),
        "analysis_theta": (theta * grid["weights"][None, :, None]).transpose(1, 2).contiguous(),
        "analysis_phi": phi * (2 * math.pi / n_phi),
    }


def _product(table: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """table (m, k) @ columns (k, n) as a batch of one: torch.mm of a small table with an odd m and
    k = 8 or 9 took 4-5x the time of the same torch.bmm on one CPU thread (MKL; e.g. (17, 9) @
    (9, 144000), the φ transform at L = 4, band 16)."""
    return torch.bmm(table.unsqueeze(0), columns.unsqueeze(0)).squeeze(0)


class GaussGrid(nn.Module):
    """Synthesis, surface gradient and analysis on the grid of ``band`` for the degrees in ``degrees``.

    Interface shared with ``molsym.o3.fourier2d.TorusGrid`` (the "fft" backend):
    ``values``, ``gradient``, ``bracket_values``, ``project``, ``project_bracket``, and for
    per-point geometry ``points`` (P, 3) and ``curl_frame`` (see :meth:`curl_frame`).
    """

    def __init__(self, band: int, degrees):
        super().__init__()
        degrees = sorted({int(l) for l in degrees})
        if not degrees or degrees[0] < 0:
            raise ValueError(f"degrees must be non-negative integers, got {degrees!r}")
        if max(degrees) > band:
            raise ValueError(f"degree {max(degrees)} exceeds the grid's band {band}")
        self.band, self.degrees = band, tuple(degrees)
        self.n_theta, self.n_phi = grid_size(band)
        self.num_points = self.n_theta * self.n_phi
        grid = gauss_grid(band)
        self.register_buffer("points", grid["points"], persistent=False)
        self.register_buffer("e_theta", grid["e_theta"], persistent=False)
        self.register_buffer("e_phi", grid["e_phi"], persistent=False)
        for l in degrees:
            for name, table in grid_tables(band, l).items():
                self.register_buffer(f"{name}_{l}", table, persistent=False)
            self.register_buffer(f"gather_{l}", order_gather_index(l), persistent=False)
            self.register_buffer(f"scatter_{l}", order_scatter_index(l), persistent=False)

    def _table(self, name: str, lmax: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A table of degree ``lmax`` (float64 buffers unless the module was cast), cast to ``dtype``."""
        if lmax not in self.degrees:
            raise ValueError(f"this grid holds degrees {self.degrees}, not {lmax}")
        table = getattr(self, f"{name}_{lmax}")
        return table if dtype is None else table.to(dtype)

    def _rows(self, x: torch.Tensor, lmax: int) -> tuple[tuple[int, ...], torch.Tensor]:
        """(..., D, C) -> leading shape and the per-order table (M, L+1, B C) (zeros where l < |m|),
        the B C functions as the columns of every matrix product."""
        if x.dim() < 2 or x.shape[-2] != (lmax + 1) ** 2:
            raise ValueError(f"expected (..., {(lmax + 1) ** 2}, channels) coefficients (lmax {lmax}), "
                             f"got shape {tuple(x.shape)}")
        lead = tuple(x.shape[:-2])
        rows = x.reshape(-1, x.shape[-2], x.shape[-1]).transpose(0, 1).reshape(x.shape[-2], -1)  # (D, B C)
        rows = torch.cat((rows, rows.new_zeros(1, rows.shape[1])))
        return lead, rows.index_select(0, self._table("gather", lmax)).view(2 * lmax + 1, lmax + 1, -1)

    def _synthesis(self, orders: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, lead, channels: int):
        """Per-order Legendre sums, then the φ transform: (M, L+1, B C) -> (..., P, C), a view of
        point-major memory (P, B, C) (which :meth:`project` reads without a copy)."""
        partial = torch.bmm(theta, orders)  # (M, n_θ, B C)
        values = _product(phi.T, partial.flatten(1)).view(self.num_points, -1, channels)  # (P, B, C), φ-major
        return values.transpose(0, 1).view(*lead, self.num_points, channels)

    def values(self, x: torch.Tensor, lmax: int) -> torch.Tensor:
        """Coefficients (..., (lmax+1)², C) -> values at the P points (..., P, C)."""
        lead, orders = self._rows(x, lmax)
        theta, phi = self._table("theta", lmax, x.dtype), self._table("phi", lmax, x.dtype)
        return self._synthesis(orders, theta, phi, lead, x.shape[-1])

    def gradient(self, x: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Components of the surface gradient ∇f = a e_θ + b e_φ at the points: a = ∂f/∂θ and
        b = (1/sin θ) ∂f/∂φ, each (..., P, C)."""
        lead, orders = self._rows(x, lmax)
        c = x.shape[-1]
        a = self._synthesis(orders, self._table("dtheta", lmax, x.dtype), self._table("phi", lmax, x.dtype), lead, c)
        b = self._synthesis(orders, self._table("theta_over_sin", lmax, x.dtype), self._table("dphi", lmax, x.dtype),
                            lead, c)
        return a, b

    @staticmethod
    def bracket_values(gradient_f, gradient_g) -> torch.Tensor:
        """{f, g} = r̂ . (∇f x ∇g) = a_f b_g - b_f a_g at the points."""
        return gradient_f[0] * gradient_g[1] - gradient_f[1] * gradient_g[0]

    def curl_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E1, E2), each (P, 3), with r̂ x ∇f = a E1 - b E2 in the terms of :meth:`gradient`
        (E1 = e_φ, E2 = e_θ): the values :meth:`project_bracket` takes are the sums of
        ∇g . (r̂ x ∇f) = {f, g}."""
        return self.e_phi, self.e_theta

    def project(self, values: torch.Tensor, lmax: int) -> torch.Tensor:
        """Values (..., P, C) -> coefficients (..., (lmax+1)², C) of degrees <= lmax (exact for
        spherical polynomials of degree <= band - lmax)."""
        if values.dim() < 2 or values.shape[-2] != self.num_points:
            raise ValueError(f"expected (..., {self.num_points}, channels) values, got shape {tuple(values.shape)}")
        lead, c = tuple(values.shape[:-2]), values.shape[-1]
        points = values.reshape(-1, self.num_points, c).transpose(0, 1).reshape(self.n_phi, -1)  # (n_φ, n_θ B C)
        partial = _product(self._table("analysis_phi", lmax, values.dtype).T, points).view(2 * lmax + 1, self.n_theta, -1)
        orders = torch.bmm(self._table("analysis_theta", lmax, values.dtype), partial).flatten(0, 1)  # (M (L+1), B C)
        out = orders.index_select(0, self._table("scatter", lmax)).view((lmax + 1) ** 2, -1, c)
        return out.transpose(0, 1).reshape(*lead, (lmax + 1) ** 2, c)

    def project_bracket(self, values: torch.Tensor, lmax: int) -> torch.Tensor:
        """Projection of bracket values {f, g} (here the same quadrature as :meth:`project`)."""
        return self.project(values, lmax)

