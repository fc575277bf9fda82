"""Real Gaunt coefficients, the Poisson-bracket coefficients, and their relation to e3nn's Wigner-3j.

With the orthonormal real spherical harmonics of ``molsym.o3.sphere`` ("integral"
normalisation, e3nn's convention),

    G[l1 m1, l2 m2, l3 m3] = ∫ Y_l1m1 Y_l2m2 Y_l3m3 dΩ                  (Gaunt coefficients)
    K[l1 m1, l2 m2, l3 m3] = ∫ {Y_l1m1, Y_l2m2} Y_l3m3 dΩ,   {f, g} = r̂ . (∇f x ∇g)

(∇ the surface gradient). Both are computed by exact quadrature on the Gauss-Legendre x
uniform grid of band l1 + l2 + l3 (``molsym.o3.sphere_grid``) and cached in float64 per
(L1, L2, L3), over all degrees <= L1, <= L2, <= L3: shape ((L1+1)², (L2+1)², (L3+1)²).

The product of f = Σ a Y and g = Σ b Y projected on degrees <= L3 has coefficients
c = Σ a b G (:func:`gaunt_contraction`, the dense reference: O(L^6)); the bracket's are
Σ a b K.

Relation to e3nn (derivation). A rotation-invariant tensor coupling l1 x l2 -> l3 is unique up
to a factor, and e3nn's ``o3.wigner_3j(l1, l2, l3)`` is such a tensor with unit Frobenius norm
in the same real basis. In the complex basis, Gaunt's integral is
√((2l1+1)(2l2+1)(2l3+1)/4π) (l1 l2 l3; 0 0 0) (l1 l2 l3; m1 m2 m3), and the 3j symbols over
(m1, m2, m3) have unit norm; the unitary change to the real basis keeps norms. Hence on every
path with l1 + l2 + l3 even

    G = σ √(2 l3 + 1) κ / √(4π) W,   κ = √((2l1+1)(2l2+1)) |(l1 l2 l3; 0 0 0)|,

with W e3nn's wigner_3j and a sign σ = ±1 (the coupling (0 0 0) vanishes on odd paths, so
G = 0 there: the product is symmetric). The bracket is antisymmetric under f <-> g and
odd under inversion (it carries r̂ . (a x b)); it lives on the paths with l1 + l2 + l3 odd.
In the complex basis {Y_l1m1, Y_l2m2} has the same integral form with ∇Y . ∇Y coupling through
the spherical components of the gradient: its reduced element is
√((2l1+1)(2l2+1)(2l3+1)/4π) √(l1(l1+1) l2(l2+1)) (l1 l2 l3; 1 -1 0), so on odd paths

    K = σ' √(2 l3 + 1) κ_odd / √(4π) W,
    κ_odd = √((2l1+1)(2l2+1) l1(l1+1) l2(l2+1)) |(l1 l2 l3; 1 -1 0)|.

The signs are σ = σ' = +1 on every path (checked numerically against e3nn on every path up to
degree 6 for G and 4 for K, to 1e-12 and 1e-10; :func:`e3nn_path_constant`). Example:
1o x 1o -> 1e: κ_odd = √6, W = ε/√6, so {a . Y_1, b . Y_1} = √(3/4π) (a x b) . Y_1 with
orthonormal Y_1 = √(3/4π) r̂; in the component normalisation (Y_1 = √3 r̂, inputs and output)
the bracket of the vectors a, b is √3 (a x b).
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

from molsym.o3.sphere import spherical_harmonics
from molsym.o3.sphere_grid import gauss_grid, grid_tables


def _check_degrees(*degrees) -> None:
    for l in degrees:
        if isinstance(l, bool) or not isinstance(l, int) or l < 0:
            raise ValueError(f"degrees must be integers >= 0, got {degrees!r}")


@functools.lru_cache(maxsize=None)
def _grid_harmonics(band: int, lmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """On the grid of ``band``: quadrature weights (P,), Y (P, D) and the gradient components
    a = ∂Y/∂θ, b = (1/sin θ) ∂Y/∂φ (P, D), D = (lmax+1)², float64."""
    grid, tables = gauss_grid(band), grid_tables(band, lmax)
    n_phi = grid["phi"].shape[0]
    weights = (grid["weights"][None, :] * (2 * math.pi / n_phi)).expand(n_phi, -1).reshape(-1)  # φ-major
    y = spherical_harmonics(lmax, grid["points"], "integral")

    def assemble(theta, phi):  # theta (M, n_θ, L+1), phi (M, n_φ) -> (P, D)
        columns = []
        for l in range(lmax + 1):
            for m in range(-l, l + 1):
                columns.append((phi[m + lmax][:, None] * theta[m + lmax, :, l][None, :]).reshape(-1))
        return torch.stack(columns, dim=-1)

    a = assemble(tables["dtheta"], tables["phi"])
    b = assemble(tables["theta_over_sin"], tables["dphi"])
    return weights, y, a, b


@functools.lru_cache(maxsize=None)
def gaunt_coefficients(lmax1: int, lmax2: int, lmax3: int) -> torch.Tensor:
    """G[i, j, k] = ∫ Y_i Y_j Y_k dΩ over all components of degrees <= lmax1, lmax2, lmax3
    (integral normalisation, e3nn order), float64 ((L1+1)², (L2+1)², (L3+1)²). Cached: do not
    modify in place; cast with ``.to(dtype)``."""
    _check_degrees(lmax1, lmax2, lmax3)
    top = max(lmax1, lmax2, lmax3)
    weights, y, _, _ = _grid_harmonics(lmax1 + lmax2 + lmax3, top)
    y1, y2, y3 = y[:, :(lmax1 + 1) ** 2], y[:, :(lmax2 + 1) ** 2], y[:, :(lmax3 + 1) ** 2]
    return _clean(torch.einsum("p,pi,pj,pk->ijk", weights, y1, y2, y3))


@functools.lru_cache(maxsize=None)
def bracket_coefficients(lmax1: int, lmax2: int, lmax3: int) -> torch.Tensor:
    """K[i, j, k] = ∫ {Y_i, Y_j} Y_k dΩ, {f, g} = r̂ . (∇f x ∇g), shapes as
    :func:`gaunt_coefficients` (antisymmetric in i, j when lmax1 = lmax2)."""
    _check_degrees(lmax1, lmax2, lmax3)
    top = max(lmax1, lmax2, lmax3)
    weights, y, a, b = _grid_harmonics(lmax1 + lmax2 + lmax3, top)
    d1, d2, d3 = (lmax1 + 1) ** 2, (lmax2 + 1) ** 2, (lmax3 + 1) ** 2
    w3 = weights[:, None] * y[:, :d3]
    return _clean(torch.einsum("pi,pj,pk->ijk", a[:, :d1], b[:, :d2], w3)
                  - torch.einsum("pi,pj,pk->ijk", b[:, :d1], a[:, :d2], w3))


def _clean(table: torch.Tensor) -> torch.Tensor:
    """Set quadrature rounding (|x| < 1e-14, on entries that vanish by symmetry) to exact zeros."""
    return torch.where(table.abs() < 1e-14, torch.zeros_like(table), table)


def gaunt_contraction(x1: torch.Tensor, x2: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The dense reference: c[..., k, c] = Σ_ij x1[..., i, c] x2[..., j, c] table[i, j, k].

    x1 (..., D1, C), x2 (..., D2, C), table (D1, D2, D3) (Gaunt or bracket coefficients, cast
    to x1's dtype) -> (..., D3, C). Cost O(D1 D2 D3) per channel, O(L^6)."""
    table = table.to(dtype=x1.dtype, device=x1.device)
    if x1.shape[-2] != table.shape[0] or x2.shape[-2] != table.shape[1]:
        raise ValueError(f"operands {tuple(x1.shape)}, {tuple(x2.shape)} do not match the table {tuple(table.shape)}")
    return torch.einsum("...ic,...jc,ijk->...kc", x1, x2, table)


def wigner_3j_symbol(j1: int, j2: int, j3: int, m1: int, m2: int, m3: int) -> float:
    """The Wigner 3j symbol (j1 j2 j3; m1 m2 m3) of integer angular momenta (Racah's formula,
    exact in rational arithmetic before the final square root)."""
    if m1 + m2 + m3 != 0 or not abs(j1 - j2) <= j3 <= j1 + j2 or max(abs(m1) - j1, abs(m2) - j2, abs(m3) - j3) > 0:
        return 0.0
    f = math.factorial
    triangle = Fraction(f(j1 + j2 - j3) * f(j1 - j2 + j3) * f(-j1 + j2 + j3), f(j1 + j2 + j3 + 1))
    square = triangle * f(j1 + m1) * f(j1 - m1) * f(j2 + m2) * f(j2 - m2) * f(j3 + m3) * f(j3 - m3)
    total = Fraction(0)
    for k in range(max(0, j2 - j3 - m1, j1 - j3 + m2), min(j1 + j2 - j3, j1 - m1, j2 + m2) + 1):
        total += Fraction((-1) ** k, f(k) * f(j1 + j2 - j3 - k) * f(j1 - m1 - k) * f(j2 + m2 - k)
                          * f(j3 - j2 + m1 + k) * f(j3 - j1 - m2 + k))
    sign = (-1) ** (j1 - j2 - m3)
    return sign * float(total) * math.sqrt(square)


def kappa_even(l1: int, l2: int, l3: int) -> float:
    """κ = √((2l1+1)(2l2+1)) |(l1 l2 l3; 0 0 0)| (zero on odd paths)."""
    return math.sqrt((2 * l1 + 1) * (2 * l2 + 1)) * abs(wigner_3j_symbol(l1, l2, l3, 0, 0, 0))


def kappa_odd(l1: int, l2: int, l3: int) -> float:
    """κ_odd = √((2l1+1)(2l2+1) l1(l1+1) l2(l2+1)) |(l1 l2 l3; 1 -1 0)| (zero on even paths)."""
    if (l1 + l2 + l3) % 2 == 0:
        return 0.0
    scale = (2 * l1 + 1) * (2 * l2 + 1) * l1 * (l1 + 1) * l2 * (l2 + 1)
    return math.sqrt(scale) * abs(wigner_3j_symbol(l1, l2, l3, 1, -1, 0))


def e3nn_path_constant(l1: int, l2: int, l3: int) -> float:
    """The factor c with G (even path) or K (odd path) = c W, W = e3nn's wigner_3j(l1, l2, l3):
    c = √(2 l3 + 1) κ / √(4π), κ = :func:`kappa_even` or :func:`kappa_odd`."""
    kappa = kappa_even(l1, l2, l3) if (l1 + l2 + l3) % 2 == 0 else kappa_odd(l1, l2, l3)
    return math.sqrt(2 * l3 + 1) * kappa / math.sqrt(4 * math.pi)


def path_block(table: torch.Tensor, l1: int, l2: int, l3: int) -> torch.Tensor:
    """The (2l1+1, 2l2+1, 2l3+1) block of a coefficient table for one path."""
    return table[l1 * l1:(l1 + 1) ** 2, l2 * l2:(l2 + 1) ** 2, l3 * l3:(l3 + 1) ** 2]
