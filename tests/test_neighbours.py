"""Neighbour lists against ASE's reference ``neighbor_list`` (exact sets of (i, j, shift)).

Every case compares the set of (i, j, integer lattice shift) with
``ase.neighborlist.neighbor_list("ijS", atoms, cutoff)``, and checks that the
Cartesian shifts equal S @ cell, vanish along open directions, and that every
edge is shorter than the cutoff. Positions are random or rattled, so no pair
sits within round-off of the cutoff.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from molsym.data.neighbours import lattice_neighbours, neighbour_list, pack_open_directions, wrap_positions

SHARED_DATA = Path(os.environ.get("MOLSYM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
OC20_SLAB = SHARED_DATA / "oc20_format" / "fairchem_tests_core_graph_atoms.json"
BPA = SHARED_DATA / "3bpa" / "train_300K.xyz"


def ase_pairs(atoms: Atoms, cutoff: float) -> set[tuple[int, ...]]:
    i, j, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    return {(a, b, *s) for a, b, s in zip(i.tolist(), j.tolist(), shifts.tolist())}


def assert_matches_ase(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Check our list against ASE's and its own invariants; return (edge_index, integer shifts)."""
    positions, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    edge_index, shifts = lattice_neighbours(positions, cell, pbc, cutoff)
    ours = {(a, b, *s) for a, b, s in zip(edge_index[0].tolist(), edge_index[1].tolist(), shifts.tolist())}
    assert len(ours) == edge_index.shape[1], "duplicate edges"
    reference = ase_pairs(atoms, cutoff)
    assert ours == reference, f"missing {sorted(reference - ours)[:5]}, extra {sorted(ours - reference)[:5]}"

    assert edge_index.dtype == np.int64 and shifts.dtype == np.int64
    assert not shifts[:, ~pbc].any(), "non-zero shift along an open direction"
    assert not ((edge_index[0] == edge_index[1]) & ~shifts.any(axis=1)).any(), "self-pair without a lattice shift"

    cartesian_index, cartesian = neighbour_list(positions, cell, pbc, cutoff)
    np.testing.assert_array_equal(cartesian_index, edge_index)
    assert cartesian.dtype == np.float64 and cartesian.shape == (edge_index.shape[1], 3)
    np.testing.assert_allclose(cartesian, shifts @ (cell * pbc[:, None]), atol=1e-9)
    vectors = positions[edge_index[1]] - positions[edge_index[0]] + cartesian
    assert (np.linalg.norm(vectors, axis=1) < cutoff).all()
    return edge_index, shifts


def random_molecule(n: int = 20, seed: int = 0, **kwargs) -> Atoms:
    rng = np.random.default_rng(seed)
    return Atoms(numbers=rng.choice([1, 6, 8], n), positions=rng.uniform(0.0, 6.0, (n, 3)), **kwargs)


def rattled(atoms: Atoms, seed: int = 0, amount: float = 0.05) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(amount, seed=seed)
    return atoms


def unwrapped(atoms: Atoms, seed: int = 0) -> Atoms:
    """Move each atom by a random lattice translation along periodic directions (same physics)."""
    atoms = atoms.copy()
    rng = np.random.default_rng(seed)
    images = rng.integers(-3, 4, (len(atoms), 3)) * atoms.pbc
    atoms.positions += images @ atoms.cell.array
    return atoms


def triclinic(pbc, seed: int) -> Atoms:
    """Random atoms in a skewed, rotated cell, positions partly outside the cell."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(3.0, 6.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3))
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    cell = cell @ rotation.T
    n = 12
    positions = rng.uniform(-0.2, 1.2, (n, 3)) @ cell
    return Atoms(numbers=[14] * n, positions=positions, cell=cell, pbc=pbc)


def slab_with_adsorbate() -> Atoms:
    slab = fcc111("Cu", (3, 3, 3), vacuum=7.0)
    add_adsorbate(slab, "O", 1.4, "fcc")
    add_adsorbate(slab, "H", 2.4, "ontop")
    return rattled(slab, seed=3)


def rotated_slab() -> Atoms:
    """A slab whose periodic vectors are not in the xy plane, with atoms out of the cell."""
    slab = slab_with_adsorbate()
    slab.rotate(35, "x", rotate_cell=True)
    slab.rotate(20, "y", rotate_cell=True)
    return unwrapped(slab, seed=4)


def read_shared(path: Path) -> Atoms:
    if not path.exists():
        pytest.skip(f"shared data file {path} not available")
    return ase.io.read(path, index=0)


def oc20_slab(pbc) -> Atoms:
    atoms = read_shared(OC20_SLAB)
    atoms.pbc = pbc
    return atoms


# --- non-periodic -------------------------------------------------------------------


@pytest.mark.parametrize("cutoff", [1.5, 3.0, 6.0])
def test_molecule_without_cell(cutoff):
    assert_matches_ase(random_molecule(), cutoff)


def test_molecule_in_large_cell_not_periodic():
    assert_matches_ase(random_molecule(cell=[30.0, 30.0, 30.0], pbc=False), 4.0)


def test_molecule_outside_its_small_nonperiodic_cell():
    molecule_ = random_molecule(cell=[2.0, 2.0, 2.0], pbc=False)
    molecule_.positions -= 10.0  # the cell is ignored along open directions
    assert_matches_ase(molecule_, 4.0)


def test_real_molecule_3bpa():
    assert_matches_ase(read_shared(BPA), 5.0)


def test_fragments_far_apart():
    """Far-apart fragments (a molecule flying off) must neither lose pairs nor blow up the cell list."""
    atoms = molecule("CH3CH2OH")
    for offset in ([1e4, 0.0, 0.0], [3.0, -2e5, 1e5], [0.0, 0.0, 11.0]):
        fragment = molecule("H2O")
        fragment.positions += offset
        atoms += fragment
    assert_matches_ase(atoms, 5.0)


def test_packing_closes_wide_gaps_rigidly():
    """Groups separated by more than 2 cutoffs along an open direction move together, to 2 cutoffs apart."""
    cutoff = 5.0
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.5], [0.5, 0.0, 1e6], [0.0, 1.0, 1e6 + 1.0]])
    cell, pbc = np.diag([4.0, 4.0, 0.0]), np.array([True, True, False])
    packed = pack_open_directions(positions, cell, pbc, cutoff)
    np.testing.assert_array_equal(packed[:2], positions[:2])
    np.testing.assert_allclose(packed[3] - packed[2], positions[3] - positions[2], atol=1e-9)
    np.testing.assert_allclose(packed[2, 2] - packed[1, 2], 2 * cutoff)
    np.testing.assert_array_equal(packed[:, :2], positions[:, :2])


def test_wrapping_moves_atoms_into_the_cell_by_lattice_vectors():
    atoms = unwrapped(triclinic(np.array([True, False, True]), seed=3), seed=5)
    wrapped, images = wrap_positions(atoms.positions, atoms.cell.array, atoms.pbc)
    assert not images[:, 1].any()
    np.testing.assert_allclose(wrapped + images @ atoms.cell.array, atoms.positions, atol=1e-9)
    # fractional coordinates along the periodic vectors, the open direction taken orthogonal to them
    basis = atoms.cell.array.copy()
    basis[1] = np.cross(basis[2], basis[0])
    fractional = np.linalg.solve(basis.T, wrapped.T).T[:, [0, 2]]
    assert (fractional > -1e-9).all() and (fractional < 1 + 1e-9).all()


# --- fully periodic -----------------------------------------------------------------


@pytest.mark.parametrize("cutoff", [3.0, 5.0])
def test_fcc_copper(cutoff):
    assert_matches_ase(rattled(bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)), cutoff)


def test_diamond_silicon_primitive_cell():
    """2 atoms in a 3.8 Å primitive cell with a 5 Å cutoff: many images, self-images included."""
    edge_index, shifts = assert_matches_ase(rattled(bulk("Si", "diamond", a=5.43)), 5.0)
    assert (edge_index[0] == edge_index[1]).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triclinic_cell(seed):
    assert_matches_ase(triclinic(True, seed), 4.5)


def test_positions_outside_the_cell():
    crystal = rattled(bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    edges_wrapped, _ = assert_matches_ase(crystal, 5.0)
    edges_unwrapped, _ = assert_matches_ase(unwrapped(crystal, seed=1), 5.0)
    assert edges_unwrapped.shape == edges_wrapped.shape


def test_real_oc20_slab_fully_periodic():
    assert_matches_ase(oc20_slab(True), 6.0)


# --- slabs and wires ----------------------------------------------------------------


@pytest.mark.parametrize("cutoff", [3.0, 6.0])
def test_slab_with_adsorbate(cutoff):
    assert_matches_ase(slab_with_adsorbate(), cutoff)


def test_slab_with_zero_vacuum_vector():
    """pbc=(T, T, F) with a zero third cell vector (common for slabs built without vacuum)."""
    slab = slab_with_adsorbate()
    slab.cell[2] = 0.0
    assert_matches_ase(slab, 5.0)


def test_slab_atoms_below_and_far_above():
    slab = slab_with_adsorbate()
    slab.positions[:, 2] -= 40.0
    desorbed = molecule("CO")
    desorbed.positions += [1.0, 2.0, 5e4]
    slab += desorbed
    assert_matches_ase(unwrapped(slab, seed=2), 5.0)


def test_rotated_slab_unwrapped():
    assert_matches_ase(rotated_slab(), 5.0)


def test_real_oc20_slab_as_2d():
    assert_matches_ase(oc20_slab((True, True, False)), 6.0)


def test_wire_periodic_along_first_vector_only():
    chain = Atoms("C6", positions=[[1.3 * k, 0.3 * (k % 2), 0.1 * k] for k in range(6)], cell=[7.8, 0.0, 0.0],
                  pbc=(True, False, False))
    assert_matches_ase(rattled(chain), 4.0)


def test_wire_with_skewed_periodic_vector_and_open_cell_rows():
    """pbc=(T, F, F) where the periodic vector points along y and the open rows are arbitrary."""
    rng = np.random.default_rng(5)
    cell = np.array([[0.4, 6.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    positions = rng.uniform(-3.0, 3.0, (10, 3)) + rng.integers(-5, 5, (10, 1)) * cell[0]
    assert_matches_ase(Atoms(numbers=[6] * 10, positions=positions, cell=cell, pbc=(True, False, False)), 4.0)


@pytest.mark.parametrize("pbc", list(itertools.product([False, True], repeat=3)))
def test_every_pbc_combination_in_a_skewed_cell(pbc):
    pbc = np.array(pbc)
    assert_matches_ase(unwrapped(triclinic(pbc, seed=int(pbc @ [1, 2, 4])), seed=7), 5.5)


# --- cells much smaller than the cutoff -----------------------------------------------


def test_one_atom_simple_cubic_cell_much_smaller_than_cutoff():
    a, cutoff = 1.5, 5.0
    atoms = Atoms("Ar", positions=[[0.2, 0.1, 0.3]], cell=[a, a, a], pbc=True)
    edge_index, shifts = assert_matches_ase(atoms, cutoff)
    # every edge is a self-image: one per lattice point n != 0 with |n| a < cutoff
    span = np.arange(-4, 5)
    lattice = np.stack(np.meshgrid(span, span, span), axis=-1).reshape(-1, 3)
    expected = int(((np.linalg.norm(lattice * a, axis=1) < cutoff) & lattice.any(axis=1)).sum())
    assert edge_index.shape[1] == expected
    assert (edge_index == 0).all()


def test_small_cell_periodic_in_one_direction():
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.3, 0.9, 0.2]], cell=[1.2, 0.0, 0.0], pbc=(True, False, False))
    edge_index, shifts = assert_matches_ase(atoms, 5.0)
    assert (edge_index[0] == edge_index[1]).any()


def test_pairs_come_in_opposite_directions():
    edge_index, shifts = assert_matches_ase(rattled(bulk("Si", "diamond", a=5.43)), 6.0)
    forward = set(zip(edge_index[0].tolist(), edge_index[1].tolist(), map(tuple, shifts.tolist())))
    backward = set(zip(edge_index[1].tolist(), edge_index[0].tolist(), map(tuple, (-shifts).tolist())))
    assert forward == backward


def test_edges_sorted_by_receiver_sender_and_shift():
    edge_index, shifts = lattice_neighbours(*_parts(rattled(bulk("Si", "diamond", a=5.43))), 6.0)
    keys = np.column_stack((edge_index.T, shifts))
    assert (np.lexsort(keys.T[::-1]) == np.arange(len(keys))).all()


# --- isolated atoms and empty structures ------------------------------------------------


def test_single_atom_has_no_neighbours():
    edge_index, shifts = assert_matches_ase(Atoms("H", positions=[[1.0, 2.0, 3.0]]), 5.0)
    assert edge_index.shape == (2, 0) and shifts.shape == (0, 3)


def test_single_atom_in_a_periodic_cell_larger_than_the_cutoff():
    atoms = Atoms("H", positions=[[1.0, 2.0, 3.0]], cell=[10.0, 10.0, 10.0], pbc=True)
    edge_index, _ = assert_matches_ase(atoms, 5.0)
    assert edge_index.shape == (2, 0)


@pytest.mark.parametrize("distance", [5.5, 1e3, 1e6])
def test_two_atoms_farther_apart_than_the_cutoff(distance):
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, distance / np.sqrt(2), distance / np.sqrt(2)]])
    edge_index, _ = assert_matches_ase(atoms, 5.0)
    assert edge_index.shape == (2, 0)


@pytest.mark.parametrize("pbc", [False, True])
def test_empty_structure(pbc):
    atoms = Atoms(cell=[5.0, 5.0, 5.0], pbc=pbc)
    edge_index, shift = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    assert edge_index.shape == (2, 0) and edge_index.dtype == np.int64
    assert shift.shape == (0, 3) and shift.dtype == np.float64


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff must be a finite positive number"):
        neighbour_list(np.zeros((2, 3)), np.zeros((3, 3)), [False] * 3, cutoff)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(bad):
    positions = np.zeros((3, 3))
    positions[1, 2] = bad
    with pytest.raises(ValueError, match=r"positions contain NaN or inf \(atoms \[1\]\)"):
        neighbour_list(positions, np.eye(3) * 5, [True] * 3, 3.0)


def test_malformed_shapes():
    with pytest.raises(ValueError, match=r"positions must have shape \(N, 3\)"):
        neighbour_list(np.zeros((4, 2)), np.eye(3), [True] * 3, 3.0)
    with pytest.raises(ValueError, match=r"cell must have shape \(3, 3\)"):
        neighbour_list(np.zeros((4, 3)), np.eye(2), [True] * 3, 3.0)
    with pytest.raises(ValueError, match="pbc must be a bool or 3 bools"):
        neighbour_list(np.zeros((4, 3)), np.eye(3), [True] * 2, 3.0)


@pytest.mark.parametrize(
    "cell, pbc, message",
    [
        (np.zeros((3, 3)), (True, True, True), "cell vector 0 is zero but pbc"),
        (np.diag([4.0, 4.0, 0.0]), (True, True, True), "cell vector 2 is zero but pbc"),
        ([[4.0, 0, 0], [0, 4.0, 0], [4.0, 4.0, 0]], (True, True, True), "linearly dependent"),
        ([[4.0, 0, 0], [8.0, 0, 0], [0, 0, 0]], (True, True, False), "linearly dependent"),
    ],
)
def test_degenerate_periodic_cell(cell, pbc, message):
    with pytest.raises(ValueError, match=f"degenerate periodic cell: .*{message}"):
        neighbour_list(np.zeros((2, 3)), np.asarray(cell, dtype=float), pbc, 3.0)


def test_degenerate_rows_along_open_directions_are_fine():
    """The cell is ignored along open directions, so zero or parallel rows there are allowed."""
    positions = np.random.default_rng(6).uniform(-2.0, 2.0, (8, 3))
    clean = Atoms(numbers=[1] * 8, positions=positions, cell=[[3.0, 0, 0], [0, 7.0, 0], [0, 0, 9.0]], pbc=(True, False, False))
    reference_index, reference_shifts = assert_matches_ase(clean, 2.5)
    degenerate = np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 0]])
    edge_index, shifts = lattice_neighbours(positions, degenerate, clean.pbc, 2.5)
    np.testing.assert_array_equal(edge_index, reference_index)
    np.testing.assert_array_equal(shifts, reference_shifts)


# --- linear scaling (pair counts, not timings) ----------------------------------------------


def test_pairs_grow_linearly_with_atoms_up_to_20k():
    """Perfect fcc Cu (a = 3.6 Å), cutoff 5 Å: 12 + 6 + 24 = 42 neighbours per atom at any size.

    Shells lie at 2.55, 3.60, 4.41 and 5.09 Å, far from the cutoff. The largest
    crystal (19,652 atoms, 825,384 pairs) must complete in a single call.
    """
    unit = bulk("Cu", "fcc", a=3.6, cubic=True)
    counts = {}
    for repeat in (3, 7, 17):
        crystal = unit.repeat(repeat)
        edge_index, shift = neighbour_list(*_parts(crystal), 5.0)
        counts[len(crystal)] = edge_index.shape[1]
        np.testing.assert_array_equal(np.bincount(edge_index[0], minlength=len(crystal)), 42)
    assert max(counts) > 19_000
    assert all(pairs == 42 * atoms for atoms, pairs in counts.items())


def _parts(atoms: Atoms):
    return atoms.positions, atoms.cell.array, atoms.pbc
