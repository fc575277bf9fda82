"""Real spherical harmonics of any degree in e3nn's convention, as Theta(theta) Phi(phi).

Convention (e3nn's): the polar axis is y. A unit vector is

    r̂ = (x, y, z) = (sin θ sin φ, cos θ, sin θ cos φ),

i.e. (x, y, z) = (y', z', x') in the textbook frame whose polar axis is z'; this is a cyclic
permutation (a proper rotation), so (r̂, e_θ, e_φ) is right-handed with
e_θ = (cos θ sin φ, -sin θ, cos θ cos φ) and e_φ = (cos φ, 0, -sin φ). Then

    Y_lm(r̂) = Θ_l^|m|(θ) Φ_m(φ),   Φ_0 = 1, Φ_m = √2 cos(mφ), Φ_-m = √2 sin(mφ) (m > 0),

without Condon-Shortley phase, components ordered m = -l..l (e3nn's order). Normalisation:
``"integral"`` (orthonormal, ∫ Y_lm Y_l'm' dΩ = δ; Θ_0^0 = 1/√(4π)) or ``"component"``
(√(4π) times that, Σ_m Y_lm² = 2l + 1, e3nn's default and the one of ``EdgeGeometry``). Both
equal ``e3nn.o3.spherical_harmonics`` to ~1e-14 for l <= 12 (tests/test_gaunt.py).

Θ_l^m is computed by the three-term recursion in (cos θ, sin θ) of the fully normalised
associated Legendre functions:

    Θ_m^m = √((2m+1)/(2m)) sin θ Θ_(m-1)^(m-1),   Θ_(m+1)^m = √(2m+3) cos θ Θ_m^m,
    Θ_l^m = a_lm (cos θ Θ_(l-1)^m - b_lm Θ_(l-2)^m),
    a_lm = √((4l²-1)/(l²-m²)),  b_lm = √(((l-1)²-m²)/(4(l-1)²-1)).

So Θ_l^m is sin^m θ times a polynomial of degree l - m in cos θ: a trigonometric polynomial
of degree l in θ whose continuation to θ in (π, 2π) (sin θ < 0) satisfies
f(2π - θ, φ) = f(θ, φ + π) for f = Σ a_lm Y_lm, the 2D Fourier basis of ``fourier2d``.
"""
from __future__ import annotations

import math

import torch

NORMALIZATIONS = ("integral", "component")


def _check_lmax(lmax) -> None:
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
        raise ValueError(f"lmax must be an integer >= 0, got {lmax!r}")


def _recursion(l: int, m: int) -> tuple[float, float]:
    a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
    b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
    return a, b


def legendre_theta(lmax: int, cos: torch.Tensor, sin: torch.Tensor, derivative: bool = False):
    """Θ_l^m(θ) (integral normalisation) for 0 <= m <= l <= lmax.

    Args:
        cos, sin: (...,) cos θ and sin θ (sin may be negative: the continuation to (π, 2π);
            sin = 1 gives Θ_l^m / sin^m θ, a polynomial in cos θ).
        derivative: also return dΘ/dθ (with d cos/dθ = -sin, d sin/dθ = cos).
    Returns:
        (..., lmax+1 [l], lmax+1 [m]) with zeros where m > l; and its θ-derivative if asked.
    """
    _check_lmax(lmax)
    theta = [[None] * (lmax + 1) for _ in range(lmax + 1)]
    dtheta = [[None] * (lmax + 1) for _ in range(lmax + 1)]
    theta[0][0] = torch.full_like(cos, 1.0 / math.sqrt(4 * math.pi))
    dtheta[0][0] = torch.zeros_like(cos)
    for m in range(1, lmax + 1):
        k = math.sqrt((2 * m + 1) / (2 * m))
        theta[m][m] = k * sin * theta[m - 1][m - 1]
        dtheta[m][m] = k * (cos * theta[m - 1][m - 1] + sin * dtheta[m - 1][m - 1])
    for m in range(lmax + 1):
        if m + 1 <= lmax:
            k = math.sqrt(2 * m + 3)
            theta[m + 1][m] = k * cos * theta[m][m]
            dtheta[m + 1][m] = k * (cos * dtheta[m][m] - sin * theta[m][m])
        for l in range(m + 2, lmax + 1):
            a, b = _recursion(l, m)
            theta[l][m] = a * (cos * theta[l - 1][m] - b * theta[l - 2][m])
            dtheta[l][m] = a * (cos * dtheta[l - 1][m] - sin * theta[l - 1][m] - b * dtheta[l - 2][m])
    zero = torch.zeros_like(cos)
    table = torch.stack([torch.stack([theta[l][m] if m <= l else zero for m in range(lmax + 1)], -1)
                         for l in range(lmax + 1)], -2)
    if not derivative:
        return table
    dtable = torch.stack([torch.stack([dtheta[l][m] if m <= l else zero for m in range(lmax + 1)], -1)
                          for l in range(lmax + 1)], -2)
    return table, dtable


def azimuthal(lmax: int, phi: torch.Tensor, derivative: bool = False):
    """Φ_m(φ) for m = -lmax..lmax: (..., 2 lmax + 1) (index m + lmax); and dΦ/dφ if asked."""
    _check_lmax(lmax)
    m = torch.arange(-lmax, lmax + 1, dtype=phi.dtype, device=phi.device)
    angle = phi.unsqueeze(-1) * m.abs()
    root2 = math.sqrt(2.0)
    one = torch.ones_like(angle)
    values = torch.where(m > 0, root2 * torch.cos(angle), torch.where(m < 0, root2 * torch.sin(angle), one))
    if not derivative:
        return values
    slopes = torch.where(m > 0, -root2 * m.abs() * torch.sin(angle),
                         torch.where(m < 0, root2 * m.abs() * torch.cos(angle), torch.zeros_like(angle)))
    return values, slopes


def degree_order(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(D,) int64 degree l and order m of every component l² + l + m, D = (lmax + 1)²."""
    l = torch.cat([torch.full((2 * k + 1,), k, dtype=torch.long) for k in range(lmax + 1)])
    m = torch.cat([torch.arange(-k, k + 1) for k in range(lmax + 1)])
    return l, m


def spherical_harmonics(lmax: int, unit: torch.Tensor, normalization: str = "component") -> torch.Tensor:
    """Y_lm(r̂) for l = 0..lmax: unit (..., 3) unit vectors -> (..., (lmax + 1)²).

    Evaluated as Θ_l^m / sin^m θ (a polynomial in y = cos θ) times sin^m θ (cos mφ, sin mφ) =
    (Re, Im) (z + i x)^m, so every value is a polynomial in (x, y, z), smooth at the poles.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if unit.shape[-1] != 3:
        raise ValueError(f"unit vectors must have shape (..., 3), got {tuple(unit.shape)}")
    x, y, z = unit.unbind(-1)
    reduced = legendre_theta(lmax, y, torch.ones_like(y))  # (..., l, m): Θ_l^m / sin^m
    real, imag = [torch.ones_like(x)], [torch.zeros_like(x)]
    for _ in range(lmax):  # (z + i x)^m
        real.append(real[-1] * z - imag[-1] * x)
        imag.append(real[-2] * x + imag[-1] * z)
    scale = math.sqrt(4 * math.pi) if normalization == "component" else 1.0
    root2 = math.sqrt(2.0)
    out = []
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            k = abs(m)
            phase = 1.0 if m == 0 else root2 * (real[k] if m > 0 else imag[k])
            out.append(scale * reduced[..., l, k] * phase)
    return torch.stack(out, dim=-1)


def order_gather_index(lmax: int) -> torch.Tensor:
    """((2 lmax + 1) (lmax + 1),) int64: for order index m + lmax (rows) and degree l (columns),
    the component l² + l + m of a coefficient vector, or (lmax + 1)² (a zero slot appended to the
    vector) where l < |m|. Gathers (D,) coefficients into the per-order table (2L+1, L+1)."""
    _check_lmax(lmax)
    pad = (lmax + 1) ** 2
    rows = [[l * l + l + m if l >= abs(m) else pad for l in range(lmax + 1)] for m in range(-lmax, lmax + 1)]
    return torch.tensor(rows, dtype=torch.long).flatten()


def order_scatter_index(lmax: int) -> torch.Tensor:
    """((lmax + 1)²,) int64: position of component l² + l + m in the flattened per-order table
    (2L+1, L+1) of :func:`order_gather_index` (row m + lmax, column l)."""
    _check_lmax(lmax)
    return torch.tensor([(m + lmax) * (lmax + 1) + l for l in range(lmax + 1) for m in range(-l, l + 1)],
                        dtype=torch.long)


def per_order(theta: torch.Tensor, lmax: int) -> torch.Tensor:
    """(..., L+1 [l], L+1 [|m|]) Θ table -> (2L+1 [m + L], ..., L+1 [l]) indexed by signed m."""
    index = torch.tensor([abs(m) for m in range(-lmax, lmax + 1)], dtype=torch.long)
    return theta.index_select(-1, index).movedim(-1, 0)
