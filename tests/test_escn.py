"""eSCN: edge frames and Wigner-D without angles, and the SO(2) convolution's exact identity with
the e3nn convolution of every O(3) path (the oracle), at lmax 1..6, in float64."""
from __future__ import annotations

import math

import pytest
import torch
from ase import Atoms
from e3nn import o3

import molsym
from molsym.nn.forms import FeatureForm
from molsym.nn.geometry import GeometryBuilder
from molsym.nn.interactions.e3nn_conv import convolution_product, form_blocks, irreps_of, to_e3nn_layout
from molsym.nn.interactions.so2_conv import (
    SO2Layout, channelwise_weights, shared_matrices, so2_convolution, so2_convolution_shared,
)
from molsym.nn.scatter import scatter_sum
from molsym.o3.rotation import edge_frames
from molsym.o3.wigner import wigner_blocks
from molsym import testing
from conftest import bpa_frames

pytestmark = pytest.mark.usefixtures("float64_default")
Y_AXIS = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)


def directions_near_the_axis() -> torch.Tensor:
    """Random unit vectors plus ±y exactly, within 1e-7 and 1e-12 of ±y, and on the equator."""
    gen = torch.Generator().manual_seed(0)
    special = [[0, 1, 0], [0, -1, 0], [1e-7, 1, 0], [1e-7, -1, -1e-7], [1e-12, -1, 0], [0, 1, 1e-12],
               [1, 0, 0], [0, 0, -1], [1, 1e-15, 0], [1, -1e-15, 0]]
    u = torch.cat((torch.randn(200, 3, generator=gen), torch.tensor(special, dtype=torch.float64)))
    return u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)


def test_edge_frames_rotate_every_direction_onto_the_polar_axis():
    u = directions_near_the_axis()
    r = edge_frames(u)
    torch.testing.assert_close(torch.einsum("eab,eb->ea", r, u), Y_AXIS.expand_as(u), rtol=0, atol=1e-15)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3).expand_as(r), rtol=0, atol=1e-15)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(len(u)), rtol=0, atol=1e-14)


def test_edge_frames_are_smooth_next_to_both_poles():
    """d R / d r̂ stays bounded within 1e-7 of ±y (no gimbal lock, no clamp): the Jacobian of
    R(r̂(x)) at x = ±y + 1e-7 equals the one at ±y to first order."""
    for pole in (1.0, -1.0):
        jacobians = []
        for offset in (0.0, 1e-7):
            x = torch.tensor([offset, pole, 0.5 * offset])
            jac = torch.autograd.functional.jacobian(
                lambda v: edge_frames((v / torch.linalg.vector_norm(v)).unsqueeze(0))[0], x)
            jacobians.append(jac)
        assert float(jacobians[0].abs().max()) < 10.0
        assert float((jacobians[0] - jacobians[1]).abs().max()) < 1e-6


def test_wigner_blocks_equal_e3nn_and_rotate_spherical_harmonics():
    """Equal to e3nn's D (via Euler angles) for random rotations; for the edge frames, including
    those next to the poles where Euler angles lose digits (e3nn's D is off by ~1e-9 there), the
    exact identity Y_l(R v) = D^l(R) Y_l(v) holds to 1e-12."""
    lmax = 6
    rotations = o3.rand_matrix(50)
    for l, block in enumerate(wigner_blocks(rotations, lmax)):
        expected = o3.Irrep(l, (-1) ** l).D_from_matrix(rotations)
        assert float((block - expected).abs().max()) < 1e-12, l
    frames = edge_frames(directions_near_the_axis())
    v = torch.randn(len(frames), 3, generator=torch.Generator().manual_seed(1))
    for l, block in enumerate(wigner_blocks(frames, lmax)):
        y = o3.spherical_harmonics(l, v, normalize=True)
        rotated = o3.spherical_harmonics(l, torch.einsum("eab,eb->ea", frames, v), normalize=True)
        assert float((torch.einsum("eab,eb->ea", block, y) - rotated).abs().max()) < 1e-12, l
        eye = torch.eye(2 * l + 1).expand_as(block)
        assert float((block @ block.transpose(1, 2) - eye).abs().max()) < 1e-12, l


def _path_maps(tp: o3.TensorProduct) -> list[torch.Tensor]:
    """For each instruction of a one-channel tensor product: its linear map (dim_out, dim_in) on the
    first operand with the second fixed to Y(ŷ) (e3nn's normalisation constants included)."""
    y = o3.spherical_harmonics(tp.irreps_in2, Y_AXIS, normalize=True, normalization="component")
    basis = torch.eye(tp.irreps_in1.dim)
    maps = []
    for p in range(len(tp.instructions)):
        weights = torch.zeros(tp.weight_numel)
        weights[p] = 1.0
        maps.append(tp(basis, y.expand(basis.shape[0], -1), weights.expand(basis.shape[0], -1)).T)
    return maps


def _oracle(lmax: int, parities_in: int, channels: int):
    """e3nn's channel-wise tensor product x (x) Y(r̂) with every O(3) path up to lmax, filter
    degrees 0..2 lmax; also its one-channel twin for reading off the path maps."""
    blocks = form_blocks(FeatureForm.spherical(channels, lmax, parities_in))
    sh = o3.Irreps.spherical_harmonics(2 * lmax)

    def build(mul):
        return convolution_product(irreps_of(blocks, mul), sh, lmax, "all")

    return build(channels), build(1), blocks


def _so2_weights(tp1: o3.TensorProduct, blocks, layout: SO2Layout, path_weights: torch.Tensor,
                 parities_in: int, channels: int):
    """A_m, B_m per edge from per-edge, per-channel path weights (E, paths, C) of the oracle."""
    maps = _path_maps(tp1)
    offsets_in = {}
    start = 0
    for s, l in blocks:
        offsets_in[s, l] = start
        start += 2 * l + 1
    e = path_weights.shape[0]
    weights = []
    for m, (n_in, n_out) in enumerate(layout.orders):
        a = torch.zeros(e, parities_in, channels, n_out, n_in)
        b = torch.zeros_like(a)
        for p, ins in enumerate(tp1.instructions):
            s_in, l_in = blocks[ins.i_in1]
            ir3 = tp1.irreps_out[ins.i_out].ir
            l_out = ir3.l
            if l_in < m or l_out < m:
                continue
            s_out = 0 if ir3.p == (-1) ** l_out else 1
            out_start = tp1.irreps_out[:ins.i_out].dim
            row_plus, row_minus = out_start + l_out + m, out_start + l_out - m
            col_plus, col_minus = offsets_in[s_in, l_in] + l_in + m, offsets_in[s_in, l_in] + l_in - m
            w = path_weights[:, p]  # (E, C)
            if s_out == s_in:  # an A path: +m -> +m and -m -> -m with the same coefficient
                coefficient = maps[p][row_plus, col_plus]
                assert abs(maps[p][row_minus, col_minus] - coefficient) < 1e-14
                a[:, s_in, :, l_out - m, l_in - m] += w * coefficient
            else:  # a B path: y+ = B x-, y- = -B x+
                coefficient = maps[p][row_plus, col_minus]
                assert abs(maps[p][row_minus, col_plus] + coefficient) < 1e-14
                b[:, s_in, :, l_out - m, l_in - m] += w * coefficient
        weights += [a] if m == 0 else [a, b]
    return weights


def _e3nn_messages(tp, blocks, h, geometry, path_weights, lmax, channels):
    """sum_j TP(h_j, Y(r̂_ij); w_ij) in the spherical form (N, 2, (lmax+1)^2, C)."""
    i, j = geometry.edge_index
    flat = tp(to_e3nn_layout(h, blocks).index_select(0, j),
              geometry.spherical_harmonics(2 * lmax), path_weights.reshape(path_weights.shape[0], -1))
    summed = scatter_sum(flat, i, h.shape[0])
    out = h.new_zeros(h.shape[0], 2, (lmax + 1) ** 2, channels)
    start = 0
    for mul, ir in tp.irreps_out:
        size = mul * ir.dim
        s = 0 if ir.p == (-1) ** ir.l else 1
        out[:, s, ir.l ** 2:(ir.l + 1) ** 2] += summed[:, start:start + size].reshape(-1, mul, ir.dim).transpose(1, 2)
        start += size
    return out


@pytest.mark.parametrize("lmax", [1, 2, 3, 4, pytest.param(5, marks=pytest.mark.slow),
                                  pytest.param(6, marks=pytest.mark.slow)])  # 5, 6: the oracle takes 10-50 s
@pytest.mark.parametrize("parities_in", [1, 2])
def test_so2_convolution_equals_the_e3nn_oracle(lmax, parities_in):
    """mmax = lmax: the SO(2) convolution reproduces e3nn's channel-wise tensor product with every
    O(3) path (odd l1 + l2 + l3 included) to 1e-10, with the SO(2) weights read off the paths."""
    channels = 2
    atoms = bpa_frames(1)[0][:7] if lmax >= 5 else bpa_frames(1)[0][:12]
    atoms.append("H")
    atoms.positions[-1] = atoms.positions[0] + [0.0, -1.1, 0.0]  # an edge exactly along -y (and +y back)
    graph = molsym.from_ase(Atoms(atoms.numbers, atoms.positions), 4.5)
    geometry = GeometryBuilder(4.5, 4)(graph)
    tp, tp1, blocks = _oracle(lmax, parities_in, channels)
    gen = torch.Generator().manual_seed(lmax)
    n, d = graph["positions"].shape[0], geometry.directed_index.shape[1]
    h = torch.randn(n, parities_in, (lmax + 1) ** 2, channels, generator=gen)
    pair_weights = torch.randn(geometry.pair_index.shape[1], len(tp.instructions), channels, generator=gen)
    layout = SO2Layout(lmax, lmax, lmax)
    blocks_am_bm = _so2_weights(tp1, blocks, layout, geometry.directed(pair_weights), parities_in, channels)
    so2 = so2_convolution(h, channelwise_weights(blocks_am_bm),
                          geometry, layout, 2, 1.0)
    reference = _e3nn_messages(tp, blocks, h, geometry, geometry.per_edge(pair_weights), lmax, channels)
    scale = float(reference.abs().max())
    assert scale > 1e-3 and float(reference[:, 1].abs().max()) > 1e-3 * scale  # pseudotensors present
    assert float((so2 - reference).abs().max()) < 1e-10 * scale
    # one weight row per pair row, shared by both directions: the same convolution
    per_pair = channelwise_weights(_so2_weights(tp1, blocks, layout, pair_weights, parities_in, channels))
    assert float((so2_convolution(h, per_pair, geometry, layout, 2, 1.0) - so2).abs().max()) < 1e-12 * scale


@pytest.mark.parametrize("lmax", [1, 2, 3])
@pytest.mark.parametrize("parities_in", [1, 2])
def test_shared_mixing_equals_the_e3nn_oracle_with_separable_path_weights(lmax, parities_in):
    """Shared mixing (one matrix per order, radial scales per (class, channel, degree) in) reproduces
    e3nn's convolution whose path weights factor as u_pc g_{s l c}(r_ij) (g of the path's input
    block): the matrices are the channel-diagonal ones of the A_m, B_m read off u, the scales g."""
    channels = 2
    atoms = bpa_frames(1)[0][:12]
    atoms.append("H")
    atoms.positions[-1] = atoms.positions[0] + [0.0, -1.1, 0.0]
    graph = molsym.from_ase(Atoms(atoms.numbers, atoms.positions), 4.5)
    geometry = GeometryBuilder(4.5, 4)(graph)
    tp, tp1, blocks = _oracle(lmax, parities_in, channels)
    gen = torch.Generator().manual_seed(10 + lmax)
    n, pairs = graph["positions"].shape[0], geometry.pair_index.shape[1]
    h = torch.randn(n, parities_in, (lmax + 1) ** 2, channels, generator=gen)
    u = torch.randn(len(tp.instructions), channels, generator=gen)
    g = torch.randn(pairs, parities_in, lmax + 1, channels, generator=gen)  # per pair, class, degree, channel
    path_g = torch.stack([g[:, blocks[ins.i_in1][0], blocks[ins.i_in1][1]] for ins in tp1.instructions], dim=1)
    layout = SO2Layout(lmax, lmax, lmax)
    matrices = shared_matrices([w[0] for w in _so2_weights(tp1, blocks, layout, u[None], parities_in, channels)],
                               layout)
    scales = [g[:, :, m:].transpose(1, 2) for m in range(lmax + 1)]  # per pair row: (P, n_in, S, C)
    so2 = so2_convolution_shared(h, scales, matrices, geometry, layout, 2, 1.0)
    reference = _e3nn_messages(tp, blocks, h, geometry, geometry.per_edge(u * path_g), lmax, channels)
    scale = float(reference.abs().max())
    assert scale > 1e-3 and float(reference[:, 1].abs().max()) > 1e-3 * scale
    assert float((so2 - reference).abs().max()) < 1e-10 * scale


def test_shared_mixing_is_equivariant_with_second_derivatives():
    torch.manual_seed(2)
    config = {"elements": [1, 6, 7, 8], "family": "escn", "channels": 4, "lmax": 3, "mmax": 2, "layers": 2,
              "num_radial": 8, "radial_hidden": 16, "mixing": "shared"}
    model = molsym.Potential.from_config(config).double()
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff)
    testing.assert_equivariant(model, graph, 1e-10)
    small = molsym.from_ase(_two_atoms_along([0.3, -1.0, 0.2], 0.0), model.cutoff)
    testing.assert_forces_match_fd(model, small, rtol=1e-6)
    testing.assert_hessian_matches_fd(model, small, rtol=1e-6)


def test_layer_reads_the_radial_outputs_as_a_and_b_blocks():
    """The radial network's outputs keep their meaning (A_0, A_1, B_1, ... blocks, so saved
    parameters load unchanged); the layer reads them reordered into the mixing matrices."""
    torch.manual_seed(3)
    model = molsym.Potential.from_config({"elements": [1, 8], "family": "escn", "channels": 3, "lmax": 3,
                                          "mmax": 2, "layers": 2, "num_radial": 8, "radial_hidden": 16}).double()
    graph = molsym.from_ase(_two_atoms_along([0.3, -1.0, 0.2], 0.0), model.cutoff)
    geometry = model.geometry(graph)
    for layer in model.interactions:
        pair = geometry.pair_weights(layer.radial_mlp, layer.num_radial)
        shapes = layer.layout.weight_shapes(layer.input_form.parities, 3)
        sizes = [math.prod(shape) for shape in shapes]
        blocks = [w.reshape(-1, *shape) for w, shape in zip(pair.split(sizes, dim=1), shapes)]
        for got, expected in zip(layer.edge_weights(geometry), channelwise_weights(blocks), strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


def _two_atoms_along(direction, offset: float):
    """H2O plus an O placed 1.3 Å from its oxygen along ``direction`` tilted by ``offset``."""
    from ase.build import molecule

    atoms = molecule("H2O")
    d = torch.tensor(direction, dtype=torch.float64)
    atoms.append("O")
    atoms.positions[-1] = atoms.positions[0] + 1.3 * (d + torch.tensor([offset, 0.0, offset])).numpy()
    return atoms


@pytest.mark.parametrize("direction", [[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], ids=["+y", "-y"])
@pytest.mark.parametrize("offset", [0.0, 1e-7])
def test_forces_and_hessian_match_finite_differences_next_to_the_poles(direction, offset):
    torch.manual_seed(0)
    model = molsym.Potential.from_config({"elements": [1, 8], "family": "escn", "channels": 4, "lmax": 2,
                                          "mmax": 2, "layers": 2, "num_radial": 8, "radial_hidden": 16}).double()
    graph = molsym.from_ase(_two_atoms_along(direction, offset), model.cutoff)
    testing.assert_forces_match_fd(model, graph, rtol=1e-6)
    testing.assert_hessian_matches_fd(model, graph, rtol=1e-6)


def test_truncated_orders_stay_equivariant():
    """mmax < lmax drops the edge-frame orders |m| > mmax: still exactly O(3)-equivariant."""
    torch.manual_seed(1)
    model = molsym.Potential.from_config({"elements": [1, 6, 7, 8], "family": "escn", "channels": 4, "lmax": 4,
                                          "mmax": 1, "layers": 1, "num_radial": 8, "radial_hidden": 16}).double()
    testing.assert_equivariant(model, molsym.from_ase(bpa_frames(1)[0], model.cutoff), 1e-10)


def test_escn_settings_are_validated():
    with pytest.raises(ValueError, match=r"layer 1 \(escn\): 'mmax' must be <= 'lmax'"):
        molsym.Potential.from_config({"elements": [1], "family": "escn", "lmax": 2, "mmax": 3})
    with pytest.raises(ValueError, match=r"'mixing' must be one of channelwise, shared, got 'full'"):
        molsym.Potential.from_config({"elements": [1], "family": "escn", "mixing": "full"})
    model = molsym.Potential.from_config({"elements": [1], "family": "escn", "channels": 4})
    assert (model.interactions[0].layout.lmax_out, model.interactions[0].layout.mmax) == (4, 2)  # defaults
