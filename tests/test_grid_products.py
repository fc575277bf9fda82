"""The fused CPU kernel of grid products (molsym/o3/grid_products.cpp) against the PyTorch path.

Both compute the same sums in a different order, so in float64 they agree to rounding: values
are O(1) sums of ~10^3 terms, 1e-12 relative is ~10^4 ulps of room. Float32 against the float64
reference: 2e-5 relative (a few hundred terms of float32 rounding, 6e-8 each).
"""
from __future__ import annotations

import math

import pytest
import torch

from molsym import native
from molsym.nn.forms import FeatureForm
from molsym.nn.interactions import gaunt as gaunt_module
from molsym.nn.interactions.gaunt import GauntSettings, ProductBasis, gaunt_output_form
from molsym.o3 import grid_products
from molsym.o3.grid_products import GridProductKernel, grid_products as fused_products
from molsym.o3.sphere_grid import GaussGrid
from molsym.testing import across_threads, random_orthogonal, rotate_spherical

pytestmark = pytest.mark.skipif(not grid_products.available(),
                                reason=f"no grid-product kernel: {native.status(grid_products.SOURCE)}")


def product_basis(channels: int, lmax: int, correlation: int, dtype=torch.float64, seed: int = 0) -> ProductBasis:
    torch.manual_seed(seed)
    settings = GauntSettings(channels=channels, lmax=lmax, correlation=correlation, backend="grid")
    basis = ProductBasis(gaunt_output_form(settings, FeatureForm.spherical(channels, lmax)), correlation, "grid")
    with torch.no_grad():
        for p in basis.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(channels))
    return basis.to(dtype).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def evaluate(basis: ProductBasis, m: torch.Tensor, native_on: bool, v: torch.Tensor):
    """Output, input gradient of Σ out², and the Hessian-vector product along v."""
    basis.native = native_on
    out = basis(m)
    (grad,) = torch.autograd.grad(out.square().sum(), m, create_graph=True)
    (hvp,) = torch.autograd.grad((grad * v).sum(), m)
    (plain,) = torch.autograd.grad(basis(m).square().sum(), m)  # first derivatives without a graph
    return out.detach(), grad.detach(), hvp, plain


@pytest.mark.parametrize("correlation", [1, 2, 3])
@pytest.mark.parametrize("lmax", [1, 2, 4])
@pytest.mark.parametrize("channels", [1, 8, 19])
def test_kernel_equals_the_pytorch_path_with_derivatives(correlation, lmax, channels):
    """Channels 1, 8, 19: one tail channel, one float64 block, two float32 blocks' worth with a tail."""
    basis = product_basis(channels, lmax, correlation)
    m = torch.randn(9, 2, (lmax + 1) ** 2, channels, dtype=torch.float64, requires_grad=True)
    v = torch.randn_like(m)
    fused = evaluate(basis, m, True, v)
    reference = evaluate(basis, m, False, v)
    for name, a, b in zip(("output", "gradient", "Hessian-vector product", "first-order gradient"), fused, reference):
        assert relative(a, b) < 1e-12, name
    assert relative(fused[3], reference[1]) < 1e-12


@pytest.mark.parametrize("parity", [False, True])
def test_kernel_product_basis_is_o3_equivariant(parity):
    """B(R m) = R B(m) for proper and improper rotations, through the kernel (eval mode)."""
    lmax = 3
    basis = product_basis(5, lmax, 3)
    m = torch.randn(6, 2, (lmax + 1) ** 2, 5, dtype=torch.float64)
    r = random_orthogonal(parity=parity, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert relative(basis(rotate_spherical(m, r)), rotate_spherical(basis(m), r)) < 1e-12


def test_float32_kernel_is_float64_accurate_to_float32_rounding():
    basis = product_basis(21, 4, 3)
    m = torch.randn(50, 2, 25, 21, dtype=torch.float64, requires_grad=True)
    basis.native = False
    out64 = basis(m)
    (grad64,) = torch.autograd.grad(out64.square().sum(), m)
    basis = basis.float()
    basis.native = True
    m32 = m.detach().float().requires_grad_(True)
    out32 = basis(m32)
    (grad32,) = torch.autograd.grad(out32.square().sum(), m32)
    assert relative(out32.double(), out64) < 2e-5
    assert relative(grad32.double(), grad64) < 2e-5


@pytest.mark.parametrize("band,lmax,factors", [(9, 3, 2), (12, 2, 4), (10, 5, 1), (7, 0, 3)])
def test_kernel_on_grids_with_an_even_number_of_angles_and_any_factor_count(band, lmax, factors):
    """Odd bands give an even n_φ = band + 1 (an unpaired angle at π); four factors and lmax 0 too."""
    grid = GaussGrid(band, {lmax})
    kernel = GridProductKernel(band, lmax, scale=0.5)
    a = torch.randn(factors, (lmax + 1) ** 2, 6, 5, dtype=torch.float64, requires_grad=True)

    shift = 0.75 if factors > 1 else 0.0

    def reference(coefficients):
        values = [grid.values(c.transpose(0, 1), lmax) for c in coefficients.unbind(0)]
        total = values[-1] + shift
        for factor in reversed(values[1:-1]):
            total = factor * total + 1.0
        if factors > 1:
            total = values[0] * total
        return 0.5 * grid.project(total, lmax)

    expected = reference(a)
    out = fused_products(a, kernel, shift, reference)
    assert relative(out, expected) < 1e-12
    g = torch.randn_like(out)
    (mine,) = torch.autograd.grad(out, a, g)
    (theirs,) = torch.autograd.grad(expected, a, g)
    assert relative(mine, theirs) < 1e-12


def test_threads_give_the_same_numbers():
    basis = product_basis(16, 3, 3)
    m = torch.randn(64, 2, 16, 16, dtype=torch.float64, requires_grad=True)

    def values_and_gradient():
        out = basis(m)
        return out, torch.autograd.grad(out.square().sum(), m)[0]

    results = across_threads(values_and_gradient)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_torch_func_transforms_and_batched_gradients_take_the_pytorch_path():
    """Under torch.func the kernel is not called; batched backward passes (is_grads_batched) equal
    a loop over their rows."""
    basis = product_basis(5, 2, 3)
    m = torch.randn(4, 2, 9, 5, dtype=torch.float64, requires_grad=True)
    grad_func = torch.func.grad(lambda t: basis(t).square().sum())(m.detach())
    (grad,) = torch.autograd.grad(basis(m).square().sum(), m)
    assert relative(grad_func, grad) < 1e-12
    out = basis(m)
    rows = torch.randn(3, *out.shape, dtype=torch.float64)
    (batched,) = torch.autograd.grad(out, m, rows, is_grads_batched=True, retain_graph=True)
    looped = torch.stack([torch.autograd.grad(out, m, r, retain_graph=True)[0] for r in rows])
    assert relative(batched, looped) < 1e-12


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_traces_and_compiled_graphs_take_the_pytorch_path_whole():
    """torch.jit.trace and torch.compile(fullgraph=True) (no graph break at the kernel's checks)
    give the kernel's numbers."""
    basis = product_basis(4, 2, 3)
    m = torch.randn(5, 2, 9, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = basis(m)
        traced = torch.jit.trace(basis, (m,), check_trace=False)
        assert relative(traced(m), expected) < 1e-12
        compiled = torch.compile(basis, fullgraph=True)
        assert relative(compiled(m), expected) < 1e-12


def test_disabled_or_unbuildable_kernels_report_why(monkeypatch, tmp_path):
    monkeypatch.setenv("MOLSYM_NATIVE", "0")
    assert native.load.__wrapped__(grid_products.SOURCE) is None
    assert "disabled" in native.status(grid_products.SOURCE)
    monkeypatch.setenv("MOLSYM_NATIVE", "1")
    monkeypatch.setenv("MOLSYM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_compiler", lambda: "/bin/false")
    assert native.load.__wrapped__(grid_products.SOURCE) is None
    assert native.status(grid_products.SOURCE).startswith("the build failed")
    assert not list(tmp_path.glob("*.tmp")), "a failed build left a partial file"
    monkeypatch.undo()
    assert native.load.__wrapped__(grid_products.SOURCE) is not None  # the real build again (cached)


def test_training_mode_takes_the_pytorch_path(monkeypatch):
    """Training differentiates the forces again: the module skips the kernel there (and uses it
    in eval mode or without gradients)."""
    calls = []
    real = gaunt_module.grid_products
    monkeypatch.setattr(gaunt_module, "grid_products", lambda *args: calls.append(1) or real(*args))
    basis = product_basis(4, 2, 3).train()
    m = torch.randn(3, 2, 9, 4, dtype=torch.float64, requires_grad=True)
    basis(m)
    assert not calls
    with torch.no_grad():
        basis(m)
    basis.eval()(m)
    assert len(calls) == 2


def test_bad_coefficients_are_refused():
    kernel = GridProductKernel(8, 2)
    with pytest.raises(ValueError, match="expected \\(K, D, N, C\\)"):
        fused_products(torch.randn(9, 4, 3), kernel, 1.0, lambda a: a)
    with pytest.raises(ValueError, match="shift must be finite"):
        fused_products(torch.randn(2, 9, 4, 3), kernel, float("nan"), lambda a: a)
    with pytest.raises(ValueError, match="\\(K, 9, N, C\\)"):
        fused_products(torch.randn(2, 16, 4, 3), kernel, 1.0, lambda a: a)
