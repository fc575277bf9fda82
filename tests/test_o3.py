"""Exact identities of the Cartesian <-> irreps maps against e3nn."""
from __future__ import annotations

import pytest
import torch
from e3nn import o3

from molsym.o3.cartesian import (
    change_basis, decompose, from_irreps, irreps_basis, skew, symmetric_traceless_outer, to_irreps,
)
from molsym.testing import random_orthogonal


# e3nn builds Wigner-D matrices in the default dtype: exact identities need float64
pytestmark = pytest.mark.usefixtures("float64_default")


def test_basis_is_orthonormal():
    q = irreps_basis().reshape(9, 9)
    assert torch.allclose(q @ q.T, torch.eye(9, dtype=torch.float64), atol=1e-15)


def test_basis_matches_e3nn_reduced_tensor_products():
    """Same subspaces and, up to one sign per irrep, the same basis as e3nn's change of basis."""
    ref = o3.ReducedTensorProducts("ij", i="1o", j="1o").change_of_basis.to(torch.float64).reshape(9, 9)
    ours = irreps_basis().reshape(9, 9)
    overlap = ours @ ref.T
    for block in (slice(0, 1), slice(1, 4), slice(4, 9)):
        sub = overlap[block, block]
        sign = torch.sign(sub.diagonal()[0])
        assert torch.allclose(sub, sign * torch.eye(sub.shape[0], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("parity", [False, True])
def test_rotation_acts_by_wigner_d(parity):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 3, dtype=torch.float64, generator=gen)
    r = random_orthogonal(parity=parity, generator=gen)
    # a general rank-2 tensor: its antisymmetric part is an axial vector (1e)
    d = o3.Irreps("0e + 1e + 2e").D_from_matrix(r)
    assert torch.allclose(to_irreps(r @ x @ r.T), to_irreps(x) @ d.T, atol=1e-13)


@pytest.mark.parametrize("parity", [False, True])
def test_edge_tensors_follow_spherical_harmonics(parity):
    """skew(v) carries the polar vector v (1o) and v v^T - |v|^2/3 carries Y_2(v) (2e)."""
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(11, 3, dtype=torch.float64, generator=gen)
    assert torch.allclose(to_irreps(skew(v))[:, 1:4], 2 ** 0.5 * v, atol=1e-14)
    y2 = o3.spherical_harmonics(2, v, normalize=False, normalization="component")
    ratio = to_irreps(symmetric_traceless_outer(v))[:, 4:] / y2
    assert torch.allclose(ratio, torch.full_like(ratio, (2 / 15) ** 0.5), atol=1e-12)
    r = random_orthogonal(parity=parity, generator=gen)
    d = o3.Irreps("0e + 1o + 2e").D_from_matrix(r)
    edge = to_irreps(torch.eye(3, dtype=torch.float64) + skew(v) + symmetric_traceless_outer(v))
    rotated = to_irreps(torch.eye(3, dtype=torch.float64) + skew(v @ r.T) + symmetric_traceless_outer(v @ r.T))
    assert torch.allclose(rotated, edge @ d.T, atol=1e-13)


def test_decompose_and_round_trip():
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    i, a, s = decompose(x)
    assert torch.allclose(i + a + s, x)
    assert torch.allclose(a, -a.transpose(-1, -2))
    assert torch.allclose(s.diagonal(dim1=-2, dim2=-1).sum(-1), torch.zeros(5, 4, dtype=torch.float64), atol=1e-14)
    c = to_irreps(x)
    assert torch.allclose(from_irreps(c), x, atol=1e-14)
    assert torch.allclose((c * c).sum(-1), (x * x).sum((-1, -2)))  # Frobenius norm preserved
    assert torch.allclose(to_irreps(i)[..., 1:], torch.zeros_like(c[..., 1:]), atol=1e-14)
    assert torch.allclose(to_irreps(a)[..., [0, 4, 5, 6, 7, 8]], torch.zeros_like(c[..., :6]), atol=1e-14)


def test_change_basis_is_one_map_along_either_axis():
    x = torch.randn(9, 7, dtype=torch.float64)
    leading = change_basis(x, to_coefficients=True, axis=0)
    trailing = change_basis(x.T.contiguous(), to_coefficients=True, axis=-1)
    torch.testing.assert_close(leading, trailing.T, rtol=0, atol=1e-15)
    torch.testing.assert_close(change_basis(leading, to_coefficients=False, axis=0), x, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="axis 0 or -1"):
        change_basis(torch.randn(2, 9, 3), to_coefficients=True, axis=1)


def test_axial_part_of_a_tensor_that_rotates_as_r_x_rt():
    """Under X -> R X R^T the antisymmetric part is an axial vector (1e), even for det R = -1."""
    gen = torch.Generator().manual_seed(5)
    v = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    r = random_orthogonal(parity=True, generator=gen)
    rotated = to_irreps(r @ skew(v) @ r.T)[:, 1:4]
    torch.testing.assert_close(rotated, torch.det(r) * (2 ** 0.5 * v) @ r.T, rtol=0, atol=1e-13)


def test_basis_cache_survives_a_first_use_inside_torch_func():
    from molsym.o3 import cartesian

    like = torch.zeros(3, dtype=torch.float64)
    cartesian._BASIS_CACHE.pop((like.dtype, like.device), None)
    x = torch.randn(9, dtype=torch.float64)

    def norm2(v):
        return (cartesian.basis_matrix(v) @ v).pow(2).sum()  # Q orthonormal: |Q v|^2 = |v|^2

    # first use two transforms deep (as in a Hessian by torch.func), then one deep
    laplacian = torch.func.grad(lambda v: torch.func.grad(norm2)(v).sum())(x)
    torch.testing.assert_close(laplacian, torch.full_like(x, 2.0), rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.func.grad(norm2)(x), 2 * x, rtol=0, atol=1e-14)
