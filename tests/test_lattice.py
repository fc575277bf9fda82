"""Lattice reduction before the neighbour search and the neighbour-count estimate that guards it."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from molsym.data import MAX_NEIGHBOURS_PER_ATOM, StructureError, lattice_neighbours
from molsym.data.lattice import check_neighbour_density, estimated_neighbours, reduced_lattice


def _arrays(atoms):
    return atoms.positions, atoms.cell.array, atoms.pbc


def _actual(atoms, cutoff):
    edge_index, _ = lattice_neighbours(*_arrays(atoms), cutoff)
    return edge_index.shape[1] / len(atoms)


def _estimate(atoms, cutoff):
    positions, cell, pbc = _arrays(atoms)
    return estimated_neighbours(positions, reduced_lattice(cell, pbc)[0], pbc, cutoff)


@pytest.mark.parametrize("name, atoms, cutoff", [
    ("fcc Cu", bulk("Cu", "fcc", a=3.6).repeat(3), 6.0),
    ("one-atom fcc cell", bulk("Cu", "fcc", a=3.6), 6.0),
    ("Pt slab", fcc111("Pt", (3, 3, 4), vacuum=8.0, periodic=False), 5.0),
    ("molecule", molecule("C60"), 5.0),
    ("thin cell", Atoms("Ar", positions=[[0, 0, 0]], cell=[30, 30, 0.5], pbc=True), 5.0),
])
def test_estimate_is_within_a_small_factor_of_the_actual_count(name, atoms, cutoff):
    """The estimate may err on the high side (it guards memory), never by much on the low side."""
    actual, estimate = _actual(atoms, cutoff), _estimate(atoms, cutoff)
    assert 0.5 * actual <= estimate <= 8.0 * actual, (name, actual, estimate)


def test_reduction_keeps_the_lattice_and_its_pairs():
    cell = np.array([[2.6, 0, 0], [2600.0, 2.5, 0], [1.0, -3.0, 2.4]])
    pbc = np.array([True, True, True])
    reduced, op = reduced_lattice(cell, pbc)
    assert abs(round(np.linalg.det(op))) == 1 and np.allclose(reduced, op @ cell)
    assert np.abs(reduced).max() < 5.0
    positions = np.array([[0.0, 0, 0], [1.3, 1.2, 1.1]])
    for given in (cell, reduced):
        edge_index, shifts = lattice_neighbours(positions, given, pbc, 4.0)
        vectors = positions[edge_index[1]] - positions[edge_index[0]] + shifts @ given
        lengths = np.sort(np.linalg.norm(vectors, axis=1))
        if given is cell:
            first = lengths
    np.testing.assert_allclose(lengths, first, atol=1e-9)


def test_open_directions_are_never_mixed_into_periodic_ones():
    cell = np.array([[10.0, 0, 0], [13.0, 9.0, 0], [100.0, 0.0, 1.0]])
    pbc = np.array([True, False, False])
    reduced, op = reduced_lattice(cell, pbc)
    np.testing.assert_array_equal(op, np.eye(3, dtype=int))


@pytest.mark.parametrize("shear", [1e-3, 1e-4, 1e-6])
def test_degenerate_cell_is_refused_with_the_estimate(shear):
    positions = np.array([[0.1, 0.2, 0.3]])
    cell = np.array([[2.0, 0, 0], [2.0, shear, 0], [0, 0, 2.0]])
    pbc = np.array([True, True, True])
    with pytest.raises(StructureError, match=rf"about .* neighbours per atom .* limit of {MAX_NEIGHBOURS_PER_ATOM}"):
        lattice_neighbours(positions, cell, pbc, 4.5)
    with pytest.raises(StructureError, match=r"shortest height is"):
        check_neighbour_density(positions, reduced_lattice(cell, pbc)[0], pbc, 4.5, where="f.xyz, frame 2")


def test_piled_up_molecule_is_refused_before_the_search():
    positions = np.random.default_rng(0).uniform(0, 0.5, (20000, 3))
    with pytest.raises(StructureError, match="neighbours per atom"):
        lattice_neighbours(positions, np.zeros((3, 3)), np.zeros(3, bool), 5.0)
