"""Random structures (hypothesis): molecules, slabs, wires and crystals with skewed cells, far from the
origin, atoms unwrapped by many lattice vectors, every pbc combination.

For each: the graph builder's pairs and distances equal ASE's; the calculator's energy is finite
in float32 and float64; float64 forces equal central finite differences at a random atom and
axis; float32 forces equal float64 ones; and no case takes more than 5 s (hypothesis' deadline).
A structure may only be refused with a StructureError that is true (atoms closer than
MIN_DISTANCE, checked with ASE). The default run tries 40 structures; ``-m slow`` tries 400.
"""
from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.geometry import minkowski_reduce
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import molsym
from molsym.calculators import MolSymCalculator
from molsym.data import MIN_DISTANCE, StructureError, from_ase, keys as K

ELEMENTS = [1, 6, 8, 29]
CUTOFF = 4.0
FD_STEP = 1e-4  # Å; central differences: error ~ h^2 * third derivative, far below the tolerance
FD_TOLERANCE = 1e-5  # eV/Å
FLOAT32_TOLERANCE = 2e-4  # eV/Å, on forces of order 1 eV/Å (float32 rounding of sums over ~100 edges)
COMMON = dict(deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow], derandomize=True,
              database=None)

_MODELS: dict = {}


def calculators():
    """Float64 and float32 calculators of one small TensorNet (built once)."""
    if not _MODELS:
        torch.manual_seed(0)
        model = molsym.Potential.from_config({"family": "tensornet", "elements": ELEMENTS, "channels": 8,
                                              "layers": 2, "num_radial": 8, "cutoff": CUTOFF}).double()
        model.set_energy_reference(scale=1.0, shift=-0.1)
        _MODELS["float64"] = MolSymCalculator(model, dtype="float64")
        _MODELS["float32"] = MolSymCalculator(model, dtype="float32")
    return _MODELS["float64"], _MODELS["float32"]


@pytest.fixture(scope="module", autouse=True)
def warm_calculators():
    """Build the models and run one structure before the timed examples."""
    for calculator in calculators():
        atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]])
        atoms.calc = calculator
        atoms.get_forces()


@st.composite
def structures(draw) -> Atoms:
    n = draw(st.integers(1, 8))
    numbers = draw(st.lists(st.sampled_from(ELEMENTS), min_size=n, max_size=n))
    pbc = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lengths = rng.uniform(2.0, 8.0, 3)
    cell = np.diag(lengths) + rng.uniform(-0.4, 0.4, (3, 3)) * lengths[:, None]
    if draw(st.booleans()):  # a skewed description of the same lattice: a_k += m a_l
        k, l = rng.choice(3, 2, replace=False)
        if pbc[l] or not pbc[k]:
            cell[k] += draw(st.integers(-1000, 1000)) * cell[l]
    assume(abs(np.linalg.det(cell)) > 0.3 * np.prod(lengths))  # skewed descriptions, but no thin lattices
    extent = 1.4 * n ** (1 / 3) + 1.0
    fractions = rng.uniform(0.0, 1.0, (n, 3))
    positions = fractions @ cell if any(pbc) else fractions * extent
    if draw(st.booleans()):  # unwrap atoms by many lattice vectors along periodic directions
        jumps = rng.integers(-10**5, 10**5, (n, 3)) * np.asarray(pbc)
        positions = positions + jumps @ cell
    offset = 10.0 ** draw(st.floats(0.0, 6.0)) * rng.standard_normal(3)
    return Atoms(numbers=numbers, positions=positions + offset, cell=cell, pbc=pbc)


def _reduced(atoms: Atoms) -> Atoms:
    """The same structure described by ASE's Minkowski-reduced cell, with rows along open directions
    (which carry no meaning) replaced by unit vectors orthogonal to the periodic ones: ASE's
    neighbour list takes seconds to minutes for cells as skewed as those drawn here."""
    copy = atoms.copy()
    if copy.pbc.any():
        reduced, _ = minkowski_reduce(copy.cell.array, pbc=copy.pbc)
        _, _, vt = np.linalg.svd(reduced[copy.pbc])
        reduced[~copy.pbc] = vt[int(copy.pbc.sum()):]
        copy.set_cell(reduced, scale_atoms=False)
    return copy


def _too_close(atoms: Atoms) -> bool:
    """Whether any pair (or atom and image) is closer than MIN_DISTANCE, by ASE."""
    return len(ase_neighbor_list("d", _reduced(atoms), MIN_DISTANCE)) > 0


def _energy(calculator, atoms: Atoms) -> float:
    copy = atoms.copy()
    copy.calc = calculator
    return copy.get_potential_energy()


def check_structure(atoms: Atoms, rng_seed: int) -> None:
    exact, single = calculators()
    try:
        graph = from_ase(atoms, CUTOFF)
    except StructureError as error:
        assert "minimum distance" in str(error) and _too_close(atoms), str(error)
        return
    # the graph builder: same pairs and distances as ASE on the structure as given
    i, j, d = ase_neighbor_list("ijd", _reduced(atoms), CUTOFF)
    vectors = graph[K.POSITIONS][graph[K.EDGE_INDEX][1]] - graph[K.POSITIONS][graph[K.EDGE_INDEX][0]] \
        + graph[K.EDGE_SHIFT]
    ours = sorted(zip(graph[K.EDGE_INDEX][0].tolist(), graph[K.EDGE_INDEX][1].tolist(),
                      torch.linalg.vector_norm(vectors, dim=1).tolist()))
    theirs = sorted(zip(i.tolist(), j.tolist(), d.tolist()))
    assert [p[:2] for p in ours] == [p[:2] for p in theirs]
    rounding = 1e-14 * max(1.0, np.abs(atoms.positions).max())  # what the float64 input coordinates carry
    np.testing.assert_allclose([p[2] for p in ours], [p[2] for p in theirs], rtol=0, atol=1e-9 + rounding)
    # the calculator: finite energies, forces = -dE/dx by central differences, float32 = float64
    attached = atoms.copy()
    attached.calc = exact
    energy, forces = attached.get_potential_energy(), attached.get_forces()
    assert math.isfinite(energy) and np.isfinite(forces).all()
    attached32 = atoms.copy()
    attached32.calc = single
    energy32, forces32 = attached32.get_potential_energy(), attached32.get_forces()
    assert math.isfinite(energy32) and np.isfinite(forces32).all()
    np.testing.assert_allclose(forces32, forces, atol=FLOAT32_TOLERANCE * max(1.0, np.abs(forces).max()), rtol=0)
    rng = np.random.default_rng(rng_seed)
    atom, axis = int(rng.integers(len(atoms))), int(rng.integers(3))
    displaced = []
    for sign in (1.0, -1.0):
        moved = atoms.copy()
        moved.positions[atom, axis] += sign * FD_STEP
        displaced.append(_energy(exact, moved))
    numerical = -(displaced[0] - displaced[1]) / (2 * FD_STEP)
    assert abs(numerical - forces[atom, axis]) < FD_TOLERANCE * max(1.0, abs(forces[atom, axis])), \
        (numerical, forces[atom, axis])


@settings(max_examples=40, **COMMON)
@given(atoms=structures(), seed=st.integers(0, 2**16))
def test_random_structures(atoms, seed):
    check_structure(atoms, seed)


@pytest.mark.slow
@settings(max_examples=400, **COMMON)
@given(atoms=structures(), seed=st.integers(0, 2**16))
def test_random_structures_many(atoms, seed):
    check_structure(atoms, seed)


@settings(max_examples=30, **COMMON)
@given(atoms=structures(), pair=st.tuples(st.integers(0, 7), st.integers(0, 7)),
       distance=st.floats(0.0, 2 * MIN_DISTANCE))
def test_close_pairs_are_refused_exactly_below_the_minimum_distance(atoms, pair, distance):
    """Move one atom to ``distance`` from another: refused (naming both) iff some pair is below MIN_DISTANCE."""
    if len(atoms) < 2:
        atoms.append("H")
        atoms.positions[-1] = atoms.positions[0] + 1.0
    a, b = pair[0] % len(atoms), pair[1] % len(atoms)
    if a == b:
        b = (a + 1) % len(atoms)
    atoms.positions[b] = atoms.positions[a] + [distance, 0.0, 0.0]
    try:
        from_ase(atoms, CUTOFF)
    except StructureError as error:
        assert "minimum distance" in str(error) and _too_close(atoms), str(error)
        if distance < MIN_DISTANCE * (1 - 1e-9) and _ase_distance(atoms, a, b) < MIN_DISTANCE:
            assert f"atoms {min(a, b)} and {max(a, b)}" in str(error)
        return
    assert not _too_close(atoms)


def _ase_distance(atoms: Atoms, a: int, b: int) -> float:
    return float(np.linalg.norm(atoms.positions[b] - atoms.positions[a]))
