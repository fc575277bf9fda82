"""Wigner-D matrices of rotation matrices, batched, without angles (e3nn's real basis).

D^0 = 1, D^1(R) = R (e3nn's l = 1 basis is (x, y, z)), and for l >= 2

    D^l = (2l + 1) C_l^T (D^(l-1) ⊗ D^1) C_l,    C_l = e3nn's wigner_3j(l - 1, 1, l)

(the coupling of l - 1 and 1 to l, normalised to unit norm). Every entry is a polynomial
in the entries of R, so D is as smooth as R and exact to rounding: equal to
``e3nn.o3.Irrep(l, p).D_from_matrix(R)`` (which goes through Euler angles) to ~1e-14.
Cost per rotation: sum over l of (2l - 1)^2 9 (2l + 1) multiply-adds, done once per
forward pass for all edges.
"""
from __future__ import annotations

import torch

_COUPLING: dict = {}


def _coupling(l: int, like: torch.Tensor) -> torch.Tensor:
    """(2l + 1) C_l reshaped to (3 (2l - 1), 2l + 1), cached per dtype and device."""
    key = (l, like.dtype, like.device)
    value = None if torch.compiler.is_compiling() else _COUPLING.get(key)
    if value is None:
        from e3nn import o3

        value = o3.wigner_3j(l - 1, 1, l, dtype=torch.float64).reshape(-1, 2 * l + 1)
        value = value.to(dtype=like.dtype, device=like.device)
        if not torch.compiler.is_compiling():
            _COUPLING[key] = value
    return value


def wigner_blocks(rotation: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """D^l(R) for l = 0..lmax: a list of (E, 2l + 1, 2l + 1) from rotations (E, 3, 3)."""
    e = rotation.shape[0]
    blocks = [rotation.new_ones(e, 1, 1)]
    if lmax >= 1:
        blocks.append(rotation)
    for l in range(2, lmax + 1):
        c = _coupling(l, rotation)
        previous = blocks[-1]
        size = 3 * (2 * l - 1)
        kron = (previous[:, :, None, :, None] * rotation[:, None, :, None, :]).reshape(e, size, size)
        blocks.append((2 * l + 1) * (c.T @ kron @ c))
    return blocks
