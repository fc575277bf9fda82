"""Functions on the sphere in the 2D Fourier basis of (θ, φ), synthesis by inverse FFT in φ ("fft" backend).

Luo, Chen & Krishnapriyan (ICLR 2024): with the continuation of ``molsym.o3.sphere`` to
θ in [0, 2π), f = Σ_lm a_lm Θ_l^|m|(θ) Φ_m(φ) of degree <= L is a trigonometric polynomial
on the torus, f = Σ_uv F[u, v] e^{iuθ} e^{ivφ}, |u|, |v| <= L, and a product of such
functions is again one (the 2D convolution of their Fourier coefficients). Products are taken
pointwise on the uniform (N_θ, N_φ) torus, N_θ = 2 Ld + 1 (no aliasing in θ for a product of
degree Ld), N_φ >= max(Ld + Lout + 1, 2 L_in + 1) rounded up to a 2-3-5-smooth FFT length
(no aliasing onto the projected orders |v| <= Lout).

* Half torus: every function on the sphere satisfies f(2π - θ, φ) = f(θ, φ + π) (Θ_l^m is
  sin^m θ times a polynomial in cos θ, Φ_m(φ + π) = (-1)^m Φ_m), so only the rows
  θ_k = 2πk / N_θ, k = 0..N_θ // 2 (θ in [0, π]) are evaluated; the others are implied.
* Synthesis per row: the θ factor of the change of basis evaluated in place (the inverse θ
  FFT of F[u, v] = Σ_l T[l, v, u] (a_{l,v} - i a_{l,-v}) / √2 is Σ_l Θ_l^v(θ_k) (...) / √2,
  one real batched matrix product per order v, O(L^2) per function and row), then the
  inverse real FFT along φ (``torch.fft.irfft``).
* Projection: the real DFT along φ (a matrix product with the (N_φ, 2 (Lout+1)) table of
  cos vφ_j and -sin vφ_j over N_φ: an rfft's autograd backward, a complex FFT of the
  zero-padded full spectrum, took 2-3x its time) gives H_v(θ_k); the torus projection
  c_lm = Σ_u P[l, v, u] H[u, v], P[l, v, u] = C_v Σ_u' T[l, v, u'] J(u + u') with the closed
  form J(n) = ∫_0^π e^{inθ} sin θ dθ = (1 + (-1)^n) / (1 - n²) (n != ±1), J(±1) = ±iπ/2
  (C_0 = 2π, C_v = 2√2π; c_l,v = Re S, c_l,-v = -Im S), is applied through
  Q[l, v, k] = Σ_u P[l, v, u] e^{-iuθ_k} / N_θ with the mirrored rows folded in:
  H_v(θ_{N-k}) = (-1)^v H_v(θ_k), so Q'[k] = Q[k] + (-1)^v Q[N - k].
* Poisson bracket {f, g} = (1/sin θ)(∂_θ f ∂_φ g - ∂_φ f ∂_θ g): the values s{f,g} =
  ∂_θ f ∂_φ g - ∂_φ f ∂_θ g are a trigonometric polynomial (tables dΘ/dθ, and iv in φ), odd
  under the mirror (s(2π - θ, φ) = -s(θ, φ + π)); the sin θ of the measure cancels the
  1/sin θ: projection with K(n) = ∫_0^π e^{inθ} dθ = π (n = 0), 2i/n (n odd), 0 (n even != 0)
  in place of J and the fold sign -(-1)^v.

Tables are float64, held as non-persistent buffers (``.to(dtype)`` casts them); complex ones
as real pairs. No custom autograd: matrix products and FFTs differentiate to any order.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from molsym.o3.sphere import legendre_theta


def fft_length(n: int) -> int:
    """The smallest length >= n whose prime factors are 2, 3 and 5 (FFTs of prime lengths such as
    29, 37 or 41 go through Bluestein's algorithm, several times slower; extra zero padding keeps
    every product exact)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def torus_size(degree: int, lmax_out: int, lmax_in: int = 0) -> tuple[int, int]:
    """(N_θ, N_φ) for products of degree <= ``degree`` of operands of degree <= ``lmax_in``,
    projected on degrees <= ``lmax_out``: N_θ = 2 degree + 1 (no aliasing in θ), N_φ the
    :func:`fft_length` of max(degree + lmax_out + 1, 2 lmax_in + 1) (none onto |v| <= lmax_out,
    and the rfft's half spectrum holds the operands' orders)."""
    for name, value in (("degree", degree), ("lmax_out", lmax_out)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return 2 * degree + 1, fft_length(max(degree + lmax_out + 1, 2 * lmax_in + 1))


def half_rows(n_theta: int) -> int:
    """Rows θ_k = 2πk / N_θ in [0, π] of the half torus: k = 0..N_θ // 2."""
    return n_theta // 2 + 1


@functools.lru_cache(maxsize=None)
def theta_fourier(lmax: int) -> torch.Tensor:
    """T[l, v, u + L] (complex128, (L+1, L+1, 2L+1)): Θ_l^v(θ) = Σ_u T[l, v, u] e^{iuθ}, |u| <= L,
    exact (from 4L + 4 samples of the trigonometric polynomial)."""
    n = 4 * lmax + 4
    theta = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    values = legendre_theta(lmax, torch.cos(theta), torch.sin(theta))  # (n, l, v)
    coefficients = torch.fft.fft(values.to(torch.complex128), dim=0) / n  # index u mod n
    u = torch.arange(-lmax, lmax + 1)
    table = coefficients.index_select(0, u % n).permute(1, 2, 0)  # (l, v, u)
    return torch.where(table.abs() < 1e-15, torch.zeros_like(table), table)


def _j_sin(n: int) -> complex:
    """J(n) = ∫_0^π e^{inθ} sin θ dθ."""
    if abs(n) == 1:
        return complex(0.0, n * math.pi / 2)
    return complex((1 + (-1) ** n) / (1 - n * n), 0.0)


def _k_flat(n: int) -> complex:
    """K(n) = ∫_0^π e^{inθ} dθ."""
    if n == 0:
        return complex(math.pi, 0.0)
    return complex(0.0, 2.0 / n if n % 2 else 0.0)


@functools.lru_cache(maxsize=None)
def synthesis_table(lmax: int, n_theta: int) -> dict[str, torch.Tensor]:
    """Real tables (V = L + 1 orders v, R = N_θ // 2 + 1 rows, L + 1 degrees), Θ_l^v(θ_k) / √2
    for v > 0 (Θ_l^0 for v = 0): "theta" (V, R, L+1); "dtheta": dΘ/dθ likewise; "dphi": v times
    "theta" (the factor of ∂/∂φ)."""
    if n_theta < 2 * lmax + 1:
        raise ValueError(f"a torus of {n_theta} θ-frequencies cannot hold degree {lmax}")
    theta = torch.arange(half_rows(n_theta), dtype=torch.float64) * (2 * math.pi / n_theta)
    values, slopes = legendre_theta(lmax, torch.cos(theta), torch.sin(theta), derivative=True)  # (R, l, v)
    scale = torch.tensor([1.0] + [1 / math.sqrt(2.0)] * lmax, dtype=torch.float64)
    values, slopes = (t.permute(2, 0, 1) * scale[:, None, None] for t in (values, slopes))  # (v, R, l)
    order = torch.arange(lmax + 1, dtype=torch.float64).view(-1, 1, 1)
    return {"theta": values.contiguous(), "dtheta": slopes.contiguous(), "dphi": (values * order).contiguous()}


@functools.lru_cache(maxsize=None)
def projection_table(lmax: int, n_theta: int, bracket: bool) -> torch.Tensor:
    """Q'[v, l, k] (see the module docstring) for the half-torus rows k < N_θ // 2 + 1, with X = K
    if ``bracket`` else J, as the real matrix (V, 2 R, 2 (L+1)) that maps (Re H_v(θ_k), Im H_v(θ_k))
    (rows k-major) to (c_l,v, c_l,-v) = (Re S, -Im S) (columns l-major)."""
    table = theta_fourier(lmax)  # (l, v, u')
    k = torch.arange(n_theta)
    u = torch.where(k <= n_theta // 2, k, k - n_theta)  # wrapped frequencies
    u_prime = torch.arange(-lmax, lmax + 1)
    integral = _k_flat if bracket else _j_sin
    kernel = torch.tensor([[integral(int(a + b)) for b in u] for a in u_prime], dtype=torch.complex128)  # (u', u)
    p = torch.einsum("lvs,sk->vlk", table, kernel)
    p = p * torch.tensor([2 * math.pi] + [2 * math.sqrt(2.0) * math.pi] * lmax, dtype=torch.float64).view(-1, 1, 1)
    q = torch.fft.fft(p, dim=-1) / n_theta  # (v, l, k): Σ_u P[u] e^{-iuθ_k} / N_θ over all N_θ rows
    rows = half_rows(n_theta)
    v = torch.arange(lmax + 1).view(-1, 1, 1)
    sign = (1 - 2 * (v % 2)) * (-1 if bracket else 1)  # H_v(θ_{N-k}) = sign H_v(θ_k)
    mirror = (n_theta - torch.arange(rows)) % n_theta
    paired = (mirror != torch.arange(rows)).view(1, 1, -1)
    folded = q[..., :rows] + torch.where(paired, sign * q[..., mirror], torch.zeros_like(q[..., :rows]))
    re, im = folded.real, folded.imag  # (v, l, k)
    # Re S = Σ_k re Re H - im Im H, -Im S = Σ_k -im Re H - re Im H
    matrix = torch.stack((torch.stack((re, -im), -1), torch.stack((-im, -re), -1)), -2)  # (v, l, k, in, out)
    return matrix.permute(0, 2, 3, 1, 4).reshape(lmax + 1, 2 * rows, 2 * (lmax + 1)).contiguous()


@functools.lru_cache(maxsize=None)
def analysis_table(lmax: int, n_phi: int) -> torch.Tensor:
    """(N_φ, 2 (L+1)): (cos vφ_j, -sin vφ_j) / N_φ, the real DFT onto orders v = 0..L (columns
    v-major), H_v = Σ_j h_j e^{-ivφ_j} / N_φ as real pairs."""
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    angle = phi[:, None] * torch.arange(lmax + 1, dtype=torch.float64)
    return (torch.stack((torch.cos(angle), -torch.sin(angle)), -1) / n_phi).reshape(n_phi, -1)


def _scatter_index(lmax: int) -> torch.Tensor:
    """((L+1)²,) positions of the components l² + l + m in the flattened (V, L+1, 2) projection
    output (order |m|, degree l, 0 for m >= 0 and 1 for m < 0)."""
    return torch.tensor([(abs(m) * (lmax + 1) + l) * 2 + (m < 0) for l in range(lmax + 1) for m in range(-l, l + 1)],
                        dtype=torch.long)


def _gather_indices(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Components a_{l,+v} and a_{l,-v} as (V (L+1),) indices into the vector with a zero slot
    appended at (L+1)² (for l < v, and for -v with v = 0)."""
    pad = (lmax + 1) ** 2
    plus = [l * l + l + v if l >= v else pad for v in range(lmax + 1) for l in range(lmax + 1)]
    minus = [l * l + l - v if l >= v and v > 0 else pad for v in range(lmax + 1) for l in range(lmax + 1)]
    return torch.tensor(plus, dtype=torch.long), torch.tensor(minus, dtype=torch.long)


class TorusGrid(nn.Module):
    """Synthesis, gradient and projection through the 2D Fourier basis (interface of
    ``molsym.o3.sphere_grid.GaussGrid``): values on the half torus, the rows θ_k in [0, π] of
    the uniform (N_θ, N_φ) torus (P = (N_θ // 2 + 1) N_φ points, θ-major).

    ``degree``: the largest degree of a product (or bracket) it represents; ``lmax_out``: the
    largest degree it projects onto; ``degrees``: the degrees of the operands it synthesises.
    """

    def __init__(self, degree: int, lmax_out: int, degrees):
        super().__init__()
        degrees = sorted({int(l) for l in degrees} | {lmax_out})
        if degrees[0] < 0 or max(degrees) > degree + lmax_out:
            raise ValueError(f"degrees {degrees} do not fit a torus for products of degree {degree}")
        self.degree, self.lmax_out, self.degrees = degree, lmax_out, tuple(degrees)
        self.n_theta, self.n_phi = torus_size(degree, lmax_out, max(degrees))
        self.n_rows = half_rows(self.n_theta)
        self.num_points = self.n_rows * self.n_phi
        theta = torch.arange(self.n_rows, dtype=torch.float64) * (2 * math.pi / self.n_theta)
        phi = torch.arange(self.n_phi, dtype=torch.float64) * (2 * math.pi / self.n_phi)
        # θ-major points (k N_φ + j), the memory order of the values (B C, R, N_φ)
        c, s = torch.cos(theta)[:, None].expand(-1, self.n_phi), torch.sin(theta)[:, None].expand(-1, self.n_phi)
        cp, sp = torch.cos(phi)[None, :].expand(self.n_rows, -1), torch.sin(phi)[None, :].expand(self.n_rows, -1)
        self.register_buffer("points", torch.stack((s * sp, c, s * cp), -1).reshape(-1, 3), persistent=False)
        self.register_buffer("e_theta", torch.stack((c * sp, -s, c * cp), -1).reshape(-1, 3), persistent=False)
        self.register_buffer("sin_e_phi", (s[..., None] * torch.stack((cp, torch.zeros_like(cp), -sp), -1))
                             .reshape(-1, 3), persistent=False)
        for l in degrees:
            for name, table in synthesis_table(l, self.n_theta).items():
                self.register_buffer(f"{name}_{l}", table, persistent=False)
            plus, minus = _gather_indices(l)
            self.register_buffer(f"plus_{l}", plus, persistent=False)
            self.register_buffer(f"minus_{l}", minus, persistent=False)
            self.register_buffer(f"scatter_{l}", _scatter_index(l), persistent=False)
            self.register_buffer(f"dft_{l}", analysis_table(l, self.n_phi), persistent=False)
            for bracket in (False, True):
                self.register_buffer(f"{'k' if bracket else 'j'}_{l}", projection_table(l, self.n_theta, bracket),
                                     persistent=False)

    def _table(self, name: str, lmax: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A table of degree ``lmax`` (float64 buffers unless the module was cast), cast to ``dtype``."""
        if lmax not in self.degrees:
            raise ValueError(f"this torus holds degrees {self.degrees}, not {lmax}")
        table = getattr(self, f"{name}_{lmax}")
        return table if dtype is None else table.to(dtype)

    def _orders(self, x: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        """SH coefficients (..., D, C) -> (a_{l,v}, a_{l,-v}), each (V, L+1, B C) (zeros where l < v
        and for -v with v = 0)."""
        if x.dim() < 2 or x.shape[-2] != (lmax + 1) ** 2:
            raise ValueError(f"expected (..., {(lmax + 1) ** 2}, channels) coefficients (lmax {lmax}), "
                             f"got shape {tuple(x.shape)}")
        rows = x.reshape(-1, x.shape[-2], x.shape[-1]).transpose(0, 1).reshape(x.shape[-2], -1)  # (D, B C)
        rows = torch.cat((rows, rows.new_zeros(1, rows.shape[1])))
        shape = (lmax + 1, lmax + 1, rows.shape[1])
        return (rows.index_select(0, self._table("plus", lmax)).view(shape),
                rows.index_select(0, self._table("minus", lmax)).view(shape))

    def _to_values(self, table: torch.Tensor, real: torch.Tensor, imag: torch.Tensor, lead, channels: int):
        """g_v(θ_k) = table (V, R, L+1) @ (real + i imag) (V, L+1, B C), then the inverse real FFT
        along φ -> values (..., P, C) (memory (B C, P))."""
        pair = torch.stack((real, imag), dim=-1).flatten(2)  # (V, L+1, 2 B C), complex interleaved
        rows = torch.view_as_complex(torch.bmm(table, pair).unflatten(2, (-1, 2)))  # (V, R, B C)
        values = torch.fft.irfft(rows.permute(2, 1, 0), n=self.n_phi, dim=2, norm="forward")  # (B C, R, N_φ)
        return values.reshape(-1, channels, self.num_points).transpose(1, 2).reshape(*lead, self.num_points, channels)

    def values(self, x: torch.Tensor, lmax: int) -> torch.Tensor:
        """Coefficients (..., (lmax+1)², C) -> values at the P points (..., P, C): per order v,
        g_v = Σ_l Θ_l^v (a_{l,v} - i a_{l,-v}) / √2."""
        plus, minus = self._orders(x, lmax)
        table = self._table("theta", lmax, x.dtype)
        return self._to_values(table, plus, -minus, tuple(x.shape[:-2]), x.shape[-1])

    def gradient(self, x: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂f/∂θ, ∂f/∂φ) at the points, each (..., P, C) (∂/∂φ multiplies g_v by iv)."""
        plus, minus = self._orders(x, lmax)
        lead, c = tuple(x.shape[:-2]), x.shape[-1]
        return (self._to_values(self._table("dtheta", lmax, x.dtype), plus, -minus, lead, c),
                self._to_values(self._table("dphi", lmax, x.dtype), minus, plus, lead, c))

    @staticmethod
    def bracket_values(gradient_f, gradient_g) -> torch.Tensor:
        """sin θ {f, g} = ∂_θ f ∂_φ g - ∂_φ f ∂_θ g at the points."""
        return gradient_f[0] * gradient_g[1] - gradient_f[1] * gradient_g[0]

    def curl_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E1, E2) = (sin θ e_φ, e_θ), (P, 3): sin θ r̂ x ∇f = a E1 - b E2 for (a, b) of
        :meth:`gradient`; sums of ∇g . (that) are the values :meth:`project_bracket` takes."""
        return self.sin_e_phi, self.e_theta

    def _project(self, values: torch.Tensor, lmax: int, kind: str) -> torch.Tensor:
        """Values (..., P, C) -> coefficients (..., D, C): the real DFT along φ, then per order one
        real product with the folded θ table."""
        if values.dim() < 2 or values.shape[-2] != self.num_points:
            raise ValueError(f"expected (..., {self.num_points}, channels) values, got shape {tuple(values.shape)}")
        lead, c = tuple(values.shape[:-2]), values.shape[-1]
        grid = values.reshape(-1, self.num_points, c).transpose(1, 2).reshape(-1, self.n_phi)  # (B C R, N_φ)
        spectrum = (grid @ self._table("dft", lmax, values.dtype)).view(-1, self.n_rows, lmax + 1, 2)
        spectrum = spectrum.permute(2, 0, 1, 3).reshape(lmax + 1, -1, 2 * self.n_rows)  # (V, B C, 2 R)
        sums = torch.bmm(spectrum, self._table(kind, lmax, values.dtype))  # (V, B C, 2 (L+1))
        out = sums.transpose(0, 1).reshape(-1, 2 * (lmax + 1) ** 2).index_select(1, self._table("scatter", lmax))
        return out.view(-1, c, (lmax + 1) ** 2).transpose(1, 2).reshape(*lead, (lmax + 1) ** 2, c)

    def project(self, values: torch.Tensor, lmax: int) -> torch.Tensor:
        """Values (..., P, C) of a product of degree <= ``degree`` -> coefficients (..., D, C)."""
        return self._project(values, lmax, "j")

    def project_bracket(self, values: torch.Tensor, lmax: int) -> torch.Tensor:
        """Values sin θ {f, g} (..., P, C) -> coefficients of {f, g} (..., D, C)."""
        return self._project(values, lmax, "k")
