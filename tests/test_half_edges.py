"""Edge-invariant quantities computed once per undirected pair (geometry pair rows).

The pair rows must reproduce the per-edge geometry exactly, pair every edge with its
reverse (periodic images included), fall back to the directed edges when the list is
not symmetric, and give the same energies, forces, stress and Hessians as the
directed evaluation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

import molsym
from molsym.data import collate, from_ase, keys as K
from molsym.models.derivatives import energy_forces_stress, hessian
from molsym.nn import geometry as geometry_module
from molsym.nn.geometry import GeometryBuilder, reverse_edges

CUTOFF = 3.5


def _structures() -> dict[str, Atoms]:
    rng = np.random.default_rng(0)
    ethanol = molecule("CH3CH2OH")
    copper = bulk("Cu", "fcc", a=3.6, cubic=False)  # thin cell: atoms see their own images
    copper.positions += rng.normal(scale=0.05, size=copper.positions.shape)
    skewed = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    skewed.positions += rng.normal(scale=0.05, size=skewed.positions.shape)
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
    return {"ethanol": ethanol, "copper": copper, "skewed": skewed, "slab": slab}


STRUCTURES = _structures()


def _direct_vectors(graph):
    i, j = graph[K.EDGE_INDEX]
    pos = graph[K.POSITIONS]
    return pos[j] - pos[i] + graph[K.EDGE_SHIFT]


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_reverse_pairs_every_edge_with_its_reverse(name):
    graph = from_ase(STRUCTURES[name], CUTOFF)
    reverse = reverse_edges(graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT])
    assert reverse is not None
    i, j = graph[K.EDGE_INDEX]
    e = i.shape[0]
    assert torch.equal(reverse.sort().values, torch.arange(e))
    assert torch.equal(reverse[reverse], torch.arange(e))
    assert not bool((reverse == torch.arange(e)).any())
    assert torch.equal(i[reverse], j) and torch.equal(j[reverse], i)
    assert torch.equal(graph[K.EDGE_SHIFT][reverse], -graph[K.EDGE_SHIFT])


def test_reverse_of_a_batch_and_of_no_edges():
    graph = collate([from_ase(STRUCTURES[name], CUTOFF) for name in ("ethanol", "copper", "slab")])
    reverse = reverse_edges(graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT])
    assert reverse is not None
    assert torch.equal(graph[K.EDGE_INDEX][:, reverse], graph[K.EDGE_INDEX].flip(0))
    lonely = from_ase(Atoms("H", positions=[[0.0, 0.0, 0.0]]), CUTOFF)
    assert reverse_edges(lonely[K.EDGE_INDEX], lonely[K.EDGE_SHIFT]).shape == (0,)


def test_unmatched_edges_have_no_reverse():
    graph = from_ase(STRUCTURES["slab"], CUTOFF)
    edge_index, shift = graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT]
    half = edge_index[0] < edge_index[1]
    assert half.any()
    assert reverse_edges(edge_index[:, half], shift[half]) is None
    assert reverse_edges(edge_index[:, 1:], shift[1:]) is None
    wrong = shift.clone()
    wrong[0] += 1e-3
    assert reverse_edges(edge_index, wrong) is None


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_pair_rows_reproduce_the_directed_geometry(name):
    graph = from_ase(STRUCTURES[name], CUTOFF)
    builder = GeometryBuilder(CUTOFF, num_radial=6).double()
    geometry = builder(graph)
    assert geometry.symmetric
    assert 2 * geometry.pair_index.shape[1] == graph[K.EDGE_INDEX].shape[1]
    vectors = _direct_vectors(graph)
    lengths = torch.linalg.vector_norm(vectors, dim=-1)
    assert torch.equal(geometry.vectors, vectors)
    assert torch.equal(geometry.lengths, lengths)
    torch.testing.assert_close(geometry.unit, vectors / lengths[:, None], rtol=0, atol=1e-15)
    torch.testing.assert_close(geometry.radial, builder.radial_basis(lengths), rtol=0, atol=1e-14)
    torch.testing.assert_close(geometry.envelope, builder.envelope(lengths), rtol=0, atol=1e-15)


def test_asymmetric_edge_list_uses_directed_rows():
    graph = from_ase(STRUCTURES["ethanol"], CUTOFF)
    keep = torch.arange(graph[K.EDGE_INDEX].shape[1]) != 3
    graph[K.EDGE_INDEX] = graph[K.EDGE_INDEX][:, keep]
    graph[K.EDGE_SHIFT] = graph[K.EDGE_SHIFT][keep]
    geometry = GeometryBuilder(CUTOFF, num_radial=6).double()(graph)
    assert not geometry.symmetric
    assert torch.equal(geometry.pair_index, graph[K.EDGE_INDEX])
    assert torch.equal(geometry.vectors, _direct_vectors(graph))


def _model(family="tensornet"):
    torch.manual_seed(0)
    config = {"elements": [1, 6, 8, 29], "family": family, "channels": 8, "layers": 2,
              "cutoff": CUTOFF, "num_radial": 6}
    return molsym.Potential.from_config(config).double()


@pytest.mark.parametrize("family", ["tensornet", "e3nn"])
@pytest.mark.parametrize("name", ["ethanol", "copper", "slab"])
def test_pair_rows_give_the_directed_results(name, family, monkeypatch):
    if family not in _families():
        pytest.skip(f"no family {family!r}")
    model = _model(family)
    graph = from_ase(STRUCTURES[name], CUTOFF)
    periodic = bool(graph[K.PBC].all())
    paired = energy_forces_stress(model, graph, stress=periodic)
    paired_hessian = hessian(model, graph)
    monkeypatch.setattr(geometry_module, "reverse_edges", lambda edge_index, shift: None)
    assert not model.geometry(graph).symmetric
    directed = energy_forces_stress(model, graph, stress=periodic)
    directed_hessian = hessian(model, graph)
    for key in ([K.ENERGY, K.ATOMIC_ENERGIES, K.FORCES] + ([K.STRESS] if periodic else [])):
        torch.testing.assert_close(paired[key], directed[key], rtol=0, atol=1e-12)
    torch.testing.assert_close(paired_hessian, directed_hessian, rtol=0, atol=1e-10)


def _families():
    from molsym.models.builder import FAMILIES

    return FAMILIES
