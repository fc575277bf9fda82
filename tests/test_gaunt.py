"""Gaunt tensor products: real spherical harmonics, Gaunt and bracket coefficients against e3nn's
Wigner-3j, both backends ("grid", "fft") against the dense contraction, O(3) equivariance
(with the bracket's pseudoscalar sign), derivatives and argument checks.

Tolerances: float64 quadratures and FFTs are exact up to rounding (~1e-15 relative per term,
sums of up to ~10^4 terms of O(1)): 1e-10 absolute on O(1) coefficients, 1e-12 on tables.
"""
from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3

from molsym.nn.gaunt_product import GauntTensorProduct
from molsym.o3.gaunt import (
    bracket_coefficients, e3nn_path_constant, gaunt_coefficients, gaunt_contraction, kappa_even, kappa_odd,
    path_block, wigner_3j_symbol,
)
from molsym.o3.sphere import spherical_harmonics
from molsym.testing import random_orthogonal, rotate_spherical

pytestmark = pytest.mark.usefixtures("float64_default")
BACKENDS = ("grid", "fft")


def random_units(count: int, seed: int = 0) -> torch.Tensor:
    u = torch.randn(count, 3, generator=torch.Generator().manual_seed(seed))
    poles = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    u = torch.cat((u, poles))
    return u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)


@pytest.mark.parametrize("normalization", ["component", "integral"])
def test_spherical_harmonics_equal_e3nn_up_to_degree_12(normalization):
    u = random_units(300)
    ours = spherical_harmonics(12, u, normalization)
    ref = o3.spherical_harmonics(list(range(13)), u, normalize=False, normalization=normalization)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_wigner_3j_symbols_match_known_values():
    assert wigner_3j_symbol(1, 1, 0, 0, 0, 0) == pytest.approx(-1 / math.sqrt(3), abs=1e-15)
    assert wigner_3j_symbol(1, 1, 2, 0, 0, 0) == pytest.approx(math.sqrt(2 / 15), abs=1e-15)
    assert wigner_3j_symbol(1, 1, 1, 1, -1, 0) == pytest.approx(1 / math.sqrt(6), abs=1e-15)
    assert wigner_3j_symbol(2, 2, 1, 0, 0, 0) == 0.0


def test_gaunt_coefficients_are_e3nn_wigner_3j_times_the_derived_constant():
    """Every path up to degree 6: G = √(2l3+1) κ/√(4π) W on even paths, 0 on odd paths."""
    lmax = 6
    table = gaunt_coefficients(lmax, lmax, lmax)
    for l1 in range(lmax + 1):
        for l2 in range(lmax + 1):
            for l3 in range(lmax + 1):
                block = path_block(table, l1, l2, l3)
                if not abs(l1 - l2) <= l3 <= l1 + l2 or (l1 + l2 + l3) % 2:
                    assert block.abs().max() < 1e-12, (l1, l2, l3)
                    continue
                expected = math.sqrt(2 * l3 + 1) * kappa_even(l1, l2, l3) / math.sqrt(4 * math.pi)
                assert e3nn_path_constant(l1, l2, l3) == expected
                torch.testing.assert_close(block, expected * o3.wigner_3j(l1, l2, l3), rtol=0, atol=1e-12)


def test_bracket_coefficients_are_e3nn_odd_paths_times_kappa_odd():
    lmax = 4
    table = bracket_coefficients(lmax, lmax, lmax)
    for l1 in range(lmax + 1):
        for l2 in range(lmax + 1):
            for l3 in range(lmax + 1):
                block = path_block(table, l1, l2, l3)
                if not abs(l1 - l2) <= l3 <= l1 + l2 or (l1 + l2 + l3) % 2 == 0:
                    assert block.abs().max() < 1e-12, (l1, l2, l3)
                    continue
                expected = math.sqrt(2 * l3 + 1) * kappa_odd(l1, l2, l3) / math.sqrt(4 * math.pi)
                torch.testing.assert_close(block, expected * o3.wigner_3j(l1, l2, l3), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bracket_of_vectors_is_sqrt3_cross_product_and_e3nn_1o_x_1o_to_1e(backend):
    """In the component normalisation (Y_1 = √3 r̂) the bracket of a . Y_1 and b . Y_1 is
    √3 (a x b) . Y_1; e3nn's FullTensorProduct 1o x 1o -> 1e is (a x b)/√2, so their ratio is √6."""
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    tp = GauntTensorProduct(1, 1, 1, 1, "odd", backend)
    scale = math.sqrt(4 * math.pi)  # f = a . Y_1^component = (√(4π) a) . Y_1^integral
    as_coefficients = lambda v: torch.cat((torch.zeros(5, 1), v), dim=1).unsqueeze(-1) * scale  # noqa: E731
    out = tp(as_coefficients(a), as_coefficients(b))[:, 1:4, 0] / scale
    torch.testing.assert_close(out, math.sqrt(3) * torch.linalg.cross(a, b), rtol=0, atol=1e-12)
    e3nn_tp = o3.FullTensorProduct("1o", "1o", filter_ir_out=["1e"])
    torch.testing.assert_close(out, math.sqrt(6) * e3nn_tp(a, b), rtol=0, atol=1e-12)


CASES = [(l1, l2, l1 + l2) for l1 in range(9) for l2 in range(9) if l1 == l2 or (l1 + l2) % 5 == 0 or l1 in (0, 1)]
CASES += [(3, 3, 2), (5, 2, 4), (8, 8, 4), (2, 7, 0), (6, 1, 6)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_equal_the_dense_gaunt_and_bracket_contractions(backend):
    """L1, L2 <= 8, full output (Lout = L1 + L2), truncated output and unequal degrees, 1e-10."""
    gen = torch.Generator().manual_seed(1)
    for l1, l2, lout in CASES:
        x1 = torch.randn(3, (l1 + 1) ** 2, 2, generator=gen)
        x2 = torch.randn(3, (l2 + 1) ** 2, 2, generator=gen)
        out = GauntTensorProduct(l1, l2, lout, 2, "both", backend)(x1, x2)
        even = gaunt_contraction(x1, x2, gaunt_coefficients(l1, l2, lout))
        odd = gaunt_contraction(x1, x2, bracket_coefficients(l1, l2, lout))
        torch.testing.assert_close(out[:, 0], even, rtol=0, atol=1e-10, msg=f"even {l1} x {l2} -> {lout}")
        torch.testing.assert_close(out[:, 1], odd, rtol=0, atol=1e-10, msg=f"odd {l1} x {l2} -> {lout}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_equivariance_with_improper_rotations(backend):
    """The product commutes with every O(3) element; the bracket picks up det R."""
    l1, l2, lout = 3, 2, 4
    tp = GauntTensorProduct(l1, l2, lout, 3, "both", backend)
    with torch.no_grad():
        for p in tp.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    x1, x2 = torch.randn(4, 16, 3), torch.randn(4, 9, 3)
    for parity in (False, True):
        r = random_orthogonal(parity=parity, generator=torch.Generator().manual_seed(3))
        out = tp(rotate_spherical(x1.unsqueeze(1), r)[:, 0], rotate_spherical(x2.unsqueeze(1), r)[:, 0])
        # class 1 (the bracket) picks up det R on top of (-1)^l
        torch.testing.assert_close(out, rotate_spherical(tp(x1, x2), r), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend):
    tp = GauntTensorProduct(2, 1, 2, 2, "both", backend)
    x1 = torch.randn(2, 9, 2, requires_grad=True)
    x2 = torch.randn(2, 4, 2, requires_grad=True)
    weights = tuple(tp.parameters())
    assert torch.autograd.gradcheck(lambda a, b, *w: tp(a, b), (x1, x2, *weights))
    assert torch.autograd.gradgradcheck(lambda a, b: tp(a, b), (x1, x2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_in_chunks_equals_one_pass(backend):
    """Eager CPU calls split the batch into chunks (``CHUNK_VALUES``), broadcast leading dimensions
    included: values and gradients of operands and weights equal one pass (float64, the same
    sums in another order: 1e-13 relative)."""
    torch.manual_seed(3)
    tp = GauntTensorProduct(2, 1, 3, 3, "both", backend)
    with torch.no_grad():
        for w in tp.parameters():
            w.uniform_(0.5, 1.5)
    x1 = torch.randn(4, 5, 9, 3, requires_grad=True)
    x2 = torch.randn(1, 5, 4, 3, requires_grad=True)  # broadcast over the first dimension
    inputs = (x1, x2, *tp.parameters())
    one = tp(x1, x2)
    one_grads = torch.autograd.grad(one.square().sum(), inputs)
    tp.CHUNK_VALUES = 3 * tp.sampler.num_points * 3  # chunks of 3 of the 20 products
    chunked = tp(x1, x2)
    chunked_grads = torch.autograd.grad(chunked.square().sum(), inputs)
    assert chunked.shape == one.shape == (4, 5, 2, 16, 3)
    for a, b in zip((chunked, *chunked_grads), (one, *one_grads)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13 * float(b.detach().abs().max()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_accuracy(backend):
    """float32 carries ~7 digits: the product of unit-size inputs agrees with float64 to 2e-5."""
    tp = GauntTensorProduct(4, 4, 8, 2, "both", backend)
    x1, x2 = torch.randn(8, 25, 2), torch.randn(8, 25, 2)
    with torch.no_grad():
        ref = tp(x1, x2)
        out = tp.to(torch.float32)(x1.float(), x2.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-5 * float(ref.abs().max()))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="parity"):
        GauntTensorProduct(1, 1, 2, 1, parity="all")
    with pytest.raises(ValueError, match="backend"):
        GauntTensorProduct(1, 1, 2, 1, backend="cuda")
    with pytest.raises(ValueError, match="lmax_out"):
        GauntTensorProduct(1, 1, 3, 1)
    with pytest.raises(ValueError, match="lmax1"):
        GauntTensorProduct(-1, 1, 0, 1)
    with pytest.raises(ValueError, match="channels"):
        GauntTensorProduct(1, 1, 1, 0)
    tp = GauntTensorProduct(1, 1, 2, 2)
    with pytest.raises(ValueError, match="expected operands"):
        tp(torch.randn(3, 9, 2), torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match="normalization"):
        spherical_harmonics(2, torch.randn(3, 3), "schmidt")
    with pytest.raises(ValueError, match="degrees"):
        gaunt_coefficients(1, -1, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tables_keep_float64_when_built_under_a_float32_default(backend):
    """Built with float32 as the default dtype (as models are before ``.to(float64)``), the module
    runs in float32 and, cast to float64, is exact again: its tables are float64 until cast."""
    torch.set_default_dtype(torch.float32)
    tp = GauntTensorProduct(3, 2, 5, 2, "both", backend)
    assert tp(torch.randn(4, 16, 2), torch.randn(4, 9, 2)).dtype == torch.float32
    tp = tp.double()
    x1, x2 = torch.randn(4, 16, 2, dtype=torch.float64), torch.randn(4, 9, 2, dtype=torch.float64)
    out = tp(x1, x2)
    torch.testing.assert_close(out[:, 0], gaunt_contraction(x1, x2, gaunt_coefficients(3, 2, 5)), rtol=0, atol=1e-10)
