"""The Gaunt family: its convolution and product basis against explicit Gaunt contractions (and
e3nn's odd paths), grid and fft models against each other, O(3) equivariance of settings
variants, the settings' validation and a TorchScript trace of the atomic energies.

Tolerances: float64 throughout; sums of O(10^3) terms of O(1) agree to 1e-10.
"""
from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3

import molsym
from molsym import testing
from molsym.models.derivatives import energy_forces_stress
from molsym.nn.forms import FeatureForm
from molsym.nn.interactions.gaunt import GauntConvolution, GauntLayer, GauntSettings, ProductBasis
from molsym.nn.scatter import scatter_sum
from molsym.o3.gaunt import e3nn_path_constant, gaunt_coefficients, gaunt_contraction
from conftest import ELEMENTS, bpa_frames

pytestmark = pytest.mark.usefixtures("float64_default")
ROOT_4PI = math.sqrt(4 * math.pi)


def odd_paths_from_e3nn(l1: int, l2: int, l3: int) -> torch.Tensor:
    """The bracket's table over all degrees <= l1, l2, l3 assembled from e3nn's wigner_3j on the
    odd paths times the derived constant (molsym.o3.gaunt)."""
    table = torch.zeros((l1 + 1) ** 2, (l2 + 1) ** 2, (l3 + 1) ** 2)
    for a in range(l1 + 1):
        for b in range(l2 + 1):
            for c in range(abs(a - b), min(a + b, l3) + 1):
                if (a + b + c) % 2:
                    table[a * a:(a + 1) ** 2, b * b:(b + 1) ** 2, c * c:(c + 1) ** 2] = (
                        e3nn_path_constant(a, b, c) * o3.wigner_3j(a, b, c))
    return table


def random_edges(nodes: int, edges: int, gen: torch.Generator):
    index = torch.randint(0, nodes, (2, edges), generator=gen)
    unit = torch.randn(edges, 3, generator=gen)
    return index, unit / torch.linalg.vector_norm(unit, dim=-1, keepdim=True)


@pytest.mark.parametrize("backend", ["grid", "fft"])
@pytest.mark.parametrize("parities_in", [1, 2])
def test_convolution_equals_explicit_gaunt_and_odd_path_contractions(backend, parities_in):
    """m_i = Σ_j √(4π) G(h_j, w Y(r̂_ij)) (class kept) + √(4π) K(h_j, w' Y(r̂_ij)) (class switched),
    in component coefficients, K from e3nn's odd paths; lmax_in 3, filter 2, output 2."""
    gen = torch.Generator().manual_seed(0)
    l_in, l_sh, l_out, c, n = 3, 2, 2, 3, 5
    conv = GauntConvolution(l_in, l_sh, l_out, parities_in, 2, True, backend)
    h = torch.randn(n, parities_in, (l_in + 1) ** 2, c, generator=gen)
    index, unit = random_edges(n, 12, gen)
    w, w_odd = torch.randn(12, l_sh + 1, c, generator=gen), torch.randn(12, l_sh + 1, c, generator=gen)
    out = conv(h, unit, w, w_odd, index, 0.25)
    sh = o3.spherical_harmonics(list(range(l_sh + 1)), unit, normalize=False, normalization="component")
    degree = torch.cat([torch.full((2 * l + 1,), l) for l in range(l_sh + 1)])
    filters, odd_filters = sh[..., None] * w[:, degree], sh[..., None] * w_odd[:, degree]
    gaunt = ROOT_4PI * gaunt_coefficients(l_in, l_sh, l_out)
    bracket = ROOT_4PI * odd_paths_from_e3nn(l_in, l_sh, l_out)
    sender = h[index[1]]
    expected = torch.zeros(n, 2, (l_out + 1) ** 2, c)
    for s in range(parities_in):
        expected[:, s] += scatter_sum(gaunt_contraction(sender[:, s], filters, gaunt), index[0], n) * 0.25
        expected[:, 1 - s] += scatter_sum(gaunt_contraction(sender[:, s], odd_filters, bracket), index[0], n) * 0.25
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["grid", "fft"])
@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_product_basis_equals_chained_gaunt_products(backend, correlation):
    """Σ_ν a_1 ... a_ν with untruncated intermediates (a_1 a_2 up to degree 2L, then times a_3),
    projected on degrees <= L; the pseudotensor class maps linearly."""
    gen = torch.Generator().manual_seed(1)
    lmax, c = 2, 3
    form = FeatureForm.spherical(c, lmax, 2)
    basis = ProductBasis(form, correlation, backend)
    m = torch.randn(4, 2, (lmax + 1) ** 2, c, generator=gen)
    a = [factor(m[:, :1])[:, 0] for factor in basis.factors]
    d = (lmax + 1) ** 2
    expected, term = a[0], a[0]
    for k, factor in enumerate(a[1:], start=1):
        table = ROOT_4PI * gaunt_coefficients(k * lmax, lmax, (k + 1) * lmax)  # untruncated
        term = gaunt_contraction(term, factor, table)
        expected = expected + term[:, :d]
    out = basis(m)
    torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(out[:, 1], basis.pseudo(m[:, 1:])[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["grid", "fft"])
def test_product_basis_in_chunks_of_nodes_equals_one_pass(backend):
    """Eager calls split the nodes into chunks (``CHUNK_VALUES``): values and input gradients equal
    those of one pass."""
    gen = torch.Generator().manual_seed(2)
    basis = ProductBasis(FeatureForm.spherical(3, 2, 2), 3, backend)
    m = torch.randn(5, 2, 9, 3, generator=gen, requires_grad=True)
    whole = basis(m)
    (whole_gradient,) = torch.autograd.grad(whole.square().sum(), m)
    basis.CHUNK_VALUES = 2 * basis.sampler.num_points * 3  # chunks of 2 nodes: 2 + 2 + 1
    chunks = basis(m)
    (chunks_gradient,) = torch.autograd.grad(chunks.square().sum(), m)
    # equal up to the order of float64 sums (gradients reach 1e4 here: a relative tolerance)
    torch.testing.assert_close(chunks, whole, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(chunks_gradient, whole_gradient, rtol=1e-13, atol=1e-12)


def _model(seed: int = 0, **settings):
    torch.manual_seed(seed)
    config = {"family": "gaunt", "channels": 4, "layers": 2, "num_radial": 8, "radial_hidden": 16,
              "elements": ELEMENTS, **settings}
    return molsym.Potential.from_config(config).to(torch.float64).eval()


@pytest.mark.parametrize("backend", ["grid", "fft"])
def test_convolution_in_chunks_of_edges_equals_one_pass(backend, monkeypatch):
    """Eager calls sum the messages onto receivers chunk by chunk of edges (``CHUNK_VALUES``: here
    7-14 of the molecule's hundreds of edges a chunk): energies and forces equal one pass (both
    parity paths, the odd bracket included; float64 sums in another order)."""
    model = _model(lmax=2, correlation=3, backend=backend)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff, torch.float64)
    whole = energy_forces_stress(model, graph, stress=False)
    layer = model.interactions[0].convolution
    monkeypatch.setattr(GauntConvolution, "CHUNK_VALUES", 7 * layer.sampler.num_points * 2 * 4)
    chunks = energy_forces_stress(model, graph, stress=False)
    torch.testing.assert_close(chunks["energies"], whole["energies"], rtol=0, atol=1e-12)
    torch.testing.assert_close(chunks["forces"], whole["forces"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("settings", [{"lmax": 2, "correlation": 3}, {"lmax": 3, "correlation": 2, "sh_lmax": 1}])
def test_grid_and_fft_models_with_the_same_weights_agree(settings):
    grid, fft = _model(**settings, backend="grid"), _model(**settings, backend="fft")
    fft.load_state_dict(grid.state_dict())
    graph = molsym.from_ase(bpa_frames(1)[0], grid.cutoff, torch.float64)
    a, b = energy_forces_stress(grid, graph), energy_forces_stress(fft, graph)
    torch.testing.assert_close(b["energies"], a["energies"], rtol=0, atol=1e-10)
    torch.testing.assert_close(b["forces"], a["forces"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("settings", [
    {"lmax": 2, "correlation": 3},
    {"lmax": 1, "correlation": 1, "odd_paths": False},
    {"lmax": 3, "correlation": 2, "sh_lmax": 1, "backend": "fft"},
    {"lmax": 2, "correlation": 2, "sh_lmax": 3},
])
def test_models_are_o3_invariant(settings):
    model = _model(**settings)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff, torch.float64)
    testing.assert_equivariant(model, graph, 1e-10)


def test_layer_is_equivariant_with_pseudotensors():
    """Rotating the input features (class s, degree l: D^l(R) det(R)^(l+s)) and the positions
    rotates the output the same way, for proper and improper R (odd paths switch class)."""
    model = _model(lmax=2)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff, torch.float64)
    layer = GauntLayer(GauntSettings(channels=4, lmax=2, correlation=2, num_radial=8, radial_hidden=16),
                       FeatureForm.spherical(4, 2, 2)).to(torch.float64)
    x = torch.randn(graph["positions"].shape[0], 2, 9, 4, generator=torch.Generator().manual_seed(2))

    ref = layer(x, model.geometry(graph), graph)
    for parity in (False, True):
        r = testing.random_orthogonal(parity=parity, generator=torch.Generator().manual_seed(5))
        moved = testing.transform_graph(graph, r)
        out = layer(testing.rotate_spherical(x, r), model.geometry(moved), moved)
        torch.testing.assert_close(out, testing.rotate_spherical(ref, r), rtol=0, atol=1e-10)


def test_settings_are_validated():
    for bad, match in (({"correlation": 4}, "correlation"), ({"correlation": 0}, "correlation"),
                       ({"backend": "cuda"}, "backend"), ({"odd_paths": "yes"}, "odd_paths"),
                       ({"sh_lmax": -1}, "sh_lmax")):
        with pytest.raises(ValueError, match=match):
            GauntSettings(**bad)
    with pytest.raises(ValueError, match="correlation"):
        _model(correlation=5)


class AtomicEnergies(torch.nn.Module):
    """positions (N, 3) -> atomic energies (N,) of a model on a fixed graph (for tracing)."""

    def __init__(self, model, graph):
        super().__init__()
        self.model, self.graph = model, graph

    def forward(self, positions):
        return self.model({**self.graph, "positions": positions})["energies"]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
@pytest.mark.parametrize("backend", ["grid", "fft"])
def test_atomic_energies_trace_with_torchscript(backend):
    """torch.jit.trace records the model (no data-dependent Python control flow in the Gaunt
    layers); the trace equals eager at displaced positions with the same edges."""
    model = _model(lmax=2, backend=backend)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff, torch.float64)
    energies = AtomicEnergies(model, graph)
    with torch.no_grad():
        traced = torch.jit.trace(energies, graph["positions"], check_trace=False)
        moved = graph["positions"] + 0.01 * torch.randn_like(graph["positions"])
        torch.testing.assert_close(traced(moved), energies(moved), rtol=0, atol=1e-12)
