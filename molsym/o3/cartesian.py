"""Exact linear maps between Cartesian 3x3 tensors and irreps 0e + 1o + 2e.

A rank-2 tensor X = I + A + S splits into its scalar part I = tr(X)/3 Id, its
antisymmetric part A and its symmetric traceless part S. The orthonormal map
:func:`to_irreps` sends X (..., 3, 3) to 9 coefficients (..., 9) ordered
[l=0 | l=1 (x, y, z) | l=2 (5)], in e3nn's basis, so that rotating X by
R X R^T rotates the coefficients by e3nn's Wigner-D matrices of 0 + 1 + 2.

Parity: a rank-2 tensor that transforms as X -> R X R^T for every O(3) element R
(a Hessian block, a polarisability) has an axial antisymmetric part: its
coefficients are 0e + 1e + 2e. TensorNet's features instead carry the
antisymmetric part of a polar vector (skew(r̂), which picks up det R), so there
the l=1 block is 1o, matching the spherical harmonics' parity (-1)^l; the map
itself is the same. The Frobenius norm is preserved: |X|^2 = |to_irreps(X)|^2.
Conversions of feature forms live in ``molsym.nn.forms``.
"""
from __future__ import annotations

import math

import torch

_S2 = 1.0 / math.sqrt(2.0)
_S3 = 1.0 / math.sqrt(3.0)
_S6 = 1.0 / math.sqrt(6.0)


def irreps_basis(dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthonormal change of basis Q (9, 3, 3): coefficient k = sum_ab Q[k,a,b] X[a,b]."""
    q = torch.zeros(9, 3, 3, dtype=dtype, device=device)
    q[0, 0, 0] = q[0, 1, 1] = q[0, 2, 2] = _S3
    # l = 1: skew(v) -> sqrt(2) v, with skew(v) = [[0,-z,y],[z,0,-x],[-y,x,0]]
    q[1, 2, 1], q[1, 1, 2] = _S2, -_S2
    q[2, 0, 2], q[2, 2, 0] = _S2, -_S2
    q[3, 1, 0], q[3, 0, 1] = _S2, -_S2
    # l = 2 in e3nn's order (y is the polar axis)
    q[4, 0, 2] = q[4, 2, 0] = _S2
    q[5, 0, 1] = q[5, 1, 0] = _S2
    q[6, 1, 1], q[6, 0, 0], q[6, 2, 2] = 2 * _S6, -_S6, -_S6
    q[7, 1, 2] = q[7, 2, 1] = _S2
    q[8, 2, 2], q[8, 0, 0] = _S2, -_S2
    return q


_BASIS_CACHE: dict = {}


def basis_matrix(like: torch.Tensor) -> torch.Tensor:
    """Q (9, 9), coefficient k = sum Q[k, 3a+b] X[a, b], cached per ``like``'s dtype and device."""
    if torch.compiler.is_compiling():  # a graph being traced holds its own constant
        return irreps_basis(like.dtype, like.device).reshape(9, 9)
    key = (like.dtype, like.device)
    q = _BASIS_CACHE.get(key)
    if q is None:
        q = irreps_basis(like.dtype, like.device).reshape(9, 9)
        # a tensor made inside a torch.func transform belongs to it: caching it would leak it
        if not torch._C._functorch.is_functorch_wrapped_tensor(q):
            _BASIS_CACHE[key] = q
    return q


def change_basis(x: torch.Tensor, *, to_coefficients: bool, axis: int) -> torch.Tensor:
    """The one map between Cartesian entries and coefficients, along ``axis`` (0 or -1) of size 9.

    Entries X[a, b] are flattened to 3a + b; coefficients c = Q X (``to_coefficients``), entries
    X = Q^T c (otherwise), Q = :func:`basis_matrix` (orthonormal). Same shape out as in.
    """
    q = basis_matrix(x)
    m = q if to_coefficients else q.T
    if axis == 0:
        return (m @ x.reshape(9, -1)).view(x.shape)
    if axis in (-1, x.dim() - 1):
        return x @ m.T
    raise ValueError(f"change_basis works along axis 0 or -1, got {axis}")


def to_irreps(x: torch.Tensor) -> torch.Tensor:
    """Cartesian (..., 3, 3) -> coefficients (..., 9) of 0e + 1o + 2e."""
    return change_basis(x.reshape(x.shape[:-2] + (9,)), to_coefficients=True, axis=-1)


def from_irreps(c: torch.Tensor) -> torch.Tensor:
    """Coefficients (..., 9) of 0e + 1o + 2e -> Cartesian (..., 3, 3)."""
    return change_basis(c, to_coefficients=False, axis=-1).reshape(c.shape[:-1] + (3, 3))


def skew(v: torch.Tensor) -> torch.Tensor:
    """Vector (..., 3) -> antisymmetric matrix (..., 3, 3) with skew(v) w = v x w."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack((o, -z, y, z, o, -x, -y, x, o), dim=-1).reshape(v.shape[:-1] + (3, 3))


def symmetric_traceless_outer(v: torch.Tensor) -> torch.Tensor:
    """Vector (..., 3) -> v v^T - |v|^2 Id / 3, shape (..., 3, 3)."""
    outer = v.unsqueeze(-1) * v.unsqueeze(-2)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return outer - (v * v).sum(-1)[..., None, None] / 3.0 * eye


def decompose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X (..., 3, 3) -> (I, A, S), each (..., 3, 3), with X = I + A + S."""
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    trace = x.diagonal(dim1=-2, dim2=-1).sum(-1)
    i_part = trace[..., None, None] / 3.0 * eye
    a_part = 0.5 * (x - x.transpose(-1, -2))
    s_part = 0.5 * (x + x.transpose(-1, -2)) - i_part
    return i_part, a_part, s_part
