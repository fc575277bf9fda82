"""Graph dicts: from_ase, collate, to_ase, to_device and their error messages."""
from __future__ import annotations

import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from molsym.data import collate, from_ase, keys as K, to_ase, to_device, validate_structure

SHARED_DATA = Path(os.environ.get("MOLSYM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CUTOFF = 5.0


def read_shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data file {path} not available")
    return path


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    return atoms


def copper() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    return atoms


def slab() -> Atoms:
    atoms = fcc111("Pt", (2, 2, 3), vacuum=6.0)
    add_adsorbate(atoms, "O", 1.3, "fcc")
    atoms.rattle(0.05, seed=2)
    return atoms


def small_cell() -> Atoms:
    """One atom in a 1.5 Å cubic cell: every edge is a self-image."""
    return Atoms("Ar", positions=[[0.1, 0.2, 0.3]], cell=[1.5, 1.5, 1.5], pbc=True)


def bpa() -> Atoms:
    return ase.io.read(read_shared("3bpa/train_300K.xyz"), index=0)


STRUCTURES = {"ethanol": ethanol, "copper": copper, "slab": slab, "small_cell": small_cell}


def assert_same_structure(positions: np.ndarray, atoms: Atoms, atol: float) -> None:
    """``positions`` (N, 3) Å are ``atoms.positions`` up to one rigid translation and lattice
    translations of single atoms along periodic directions (how from_ase places a structure)."""
    delta = positions - atoms.positions
    delta = delta - delta[:1]
    periodic = atoms.cell.array[atoms.pbc]
    if len(periodic):
        coefficients = np.linalg.lstsq(periodic.T, delta.T, rcond=None)[0].T  # (N, k) lattice coordinates
        delta = delta - np.round(coefficients) @ periodic
    np.testing.assert_allclose(delta, 0.0, atol=atol)


def edge_vectors(graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """r_ij = pos[j] - pos[i] + shift, (E, 3) Å (the documented convention)."""
    i, j = graph[K.EDGE_INDEX]
    return graph[K.POSITIONS][j] - graph[K.POSITIONS][i] + graph[K.EDGE_SHIFT]


def ase_distances(atoms: Atoms, cutoff: float) -> dict[tuple[int, ...], float]:
    i, j, shifts, d = ase_neighbor_list("ijSd", atoms, cutoff)
    return {(a, b, *s): x for a, b, s, x in zip(i.tolist(), j.tolist(), shifts.tolist(), d.tolist())}


def integer_shifts(graph: dict[str, torch.Tensor]) -> np.ndarray:
    """Cartesian edge shifts back to integer lattice shifts (periodic directions only)."""
    cell = graph[K.CELL][0].double().numpy()
    pbc = graph[K.PBC][0].numpy()
    shifts = np.zeros((graph[K.EDGE_SHIFT].shape[0], 3))
    if pbc.any():
        solution = np.linalg.lstsq(cell[pbc].T, graph[K.EDGE_SHIFT].double().numpy().T, rcond=None)[0]
        shifts[:, pbc] = solution.T
    return np.rint(shifts).astype(int)


# --- from_ase -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_from_ase_keys_shapes_and_dtypes(name, dtype):
    atoms = STRUCTURES[name]()
    graph = from_ase(atoms, CUTOFF, dtype)
    n = len(atoms)
    edges = graph[K.EDGE_INDEX].shape[1]
    assert set(graph) == set(K.INPUT_KEYS)
    expected = {
        K.POSITIONS: ((n, 3), dtype),
        K.ATOMIC_NUMBERS: ((n,), torch.int64),
        K.BATCH: ((n,), torch.int64),
        K.CELL: ((1, 3, 3), dtype),
        K.PBC: ((1, 3), torch.bool),
        K.EDGE_INDEX: ((2, edges), torch.int64),
        K.EDGE_SHIFT: ((edges, 3), dtype),
        K.NUM_ATOMS: ((1,), torch.int64),
    }
    for key, (shape, key_dtype) in expected.items():
        assert tuple(graph[key].shape) == shape, key
        assert graph[key].dtype == key_dtype, key
    assert edges > 0
    assert not graph[K.BATCH].any()
    assert graph[K.NUM_ATOMS].item() == n
    np.testing.assert_array_equal(graph[K.ATOMIC_NUMBERS].numpy(), atoms.numbers)
    np.testing.assert_array_equal(graph[K.PBC][0].numpy(), atoms.pbc)
    assert_same_structure(graph[K.POSITIONS].double().numpy(), atoms, atol=1e-5)
    np.testing.assert_allclose(graph[K.CELL][0].double().numpy(), atoms.cell.array, rtol=1e-7)


def test_from_ase_real_molecule_in_a_nonperiodic_box():
    atoms = bpa()  # 3BPA frames carry a 50 Å box with pbc=False
    graph = from_ase(atoms, CUTOFF)
    np.testing.assert_array_equal(graph[K.CELL][0].numpy(), atoms.cell.array)
    assert not graph[K.PBC].any()
    assert not graph[K.EDGE_SHIFT].any()


def test_from_ase_empty_structure():
    graph = from_ase(Atoms(), CUTOFF)
    assert tuple(graph[K.POSITIONS].shape) == (0, 3)
    assert tuple(graph[K.EDGE_INDEX].shape) == (2, 0)
    assert tuple(graph[K.EDGE_SHIFT].shape) == (0, 3)
    assert graph[K.NUM_ATOMS].tolist() == [0]


def test_from_ase_rejects_integer_dtype():
    with pytest.raises(ValueError, match="dtype must be a floating-point torch dtype"):
        from_ase(ethanol(), CUTOFF, torch.int64)


# --- edge vectors against ASE ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STRUCTURES) + ["bpa"])
def test_edge_vectors_reproduce_ase_distances(name):
    atoms = bpa() if name == "bpa" else STRUCTURES[name]()
    graph = from_ase(atoms, CUTOFF)
    (placed,) = to_ase(graph)  # the graph's shifts refer to its wrapped, centred positions
    reference = ase_distances(placed, CUTOFF)
    keys = [(a, b, *s) for a, b, s in zip(*graph[K.EDGE_INDEX].tolist(), integer_shifts(graph).tolist())]
    assert sorted(keys) == sorted(reference)
    lengths = torch.linalg.vector_norm(edge_vectors(graph), dim=1).numpy()
    np.testing.assert_allclose(lengths, [reference[k] for k in keys], rtol=0, atol=1e-10)
    # and the pairs with their distances are those of the structure as given
    original = ase_distances(atoms, CUTOFF)
    pairs = sorted((a, b, round(d, 8)) for (a, b, *_), d in original.items())
    assert pairs == sorted((a, b, round(float(d), 8)) for (a, b, *_), d in zip(keys, lengths))


def test_edge_vectors_in_float32_match_float64():
    graph64 = from_ase(copper(), CUTOFF, torch.float64)
    graph32 = from_ase(copper(), CUTOFF, torch.float32)
    torch.testing.assert_close(edge_vectors(graph32).double(), edge_vectors(graph64), atol=1e-5, rtol=0)


def test_model_geometry_uses_the_same_edge_convention():
    from molsym.nn.geometry import GeometryBuilder

    graph = from_ase(slab(), CUTOFF)
    geometry = GeometryBuilder(CUTOFF, num_radial=4)(graph)
    torch.testing.assert_close(geometry.vectors, edge_vectors(graph))
    assert (geometry.lengths < CUTOFF).all()


def test_edge_vectors_differentiable_in_positions():
    graph = from_ase(copper(), CUTOFF)
    graph[K.POSITIONS].requires_grad_(True)
    lengths = torch.linalg.vector_norm(edge_vectors(graph), dim=1)
    (gradient,) = torch.autograd.grad(lengths.sum(), graph[K.POSITIONS])
    # every edge appears in both directions, so the summed lengths are translation invariant
    torch.testing.assert_close(gradient.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)


# --- collate ----------------------------------------------------------------------------------


def several_structures() -> list[Atoms]:
    return [ethanol(), copper(), Atoms(), slab(), small_cell(), Atoms("H", positions=[[0.0, 0.0, 0.0]])]


def with_targets(graph: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    n = graph[K.POSITIONS].shape[0]
    hessian = torch.randn(3 * n, 3 * n, generator=generator, dtype=torch.float64)
    return {
        **graph,
        K.ENERGY: torch.randn(1, generator=generator, dtype=torch.float64),
        K.FORCES: torch.randn(n, 3, generator=generator, dtype=torch.float64),
        K.HESSIAN: hessian + hessian.T,
    }


def test_collate_offsets_edges_and_sets_batch():
    graphs = [from_ase(a, CUTOFF) for a in several_structures()]
    batch = collate(graphs)
    counts = [g[K.POSITIONS].shape[0] for g in graphs]
    edge_counts = [g[K.EDGE_INDEX].shape[1] for g in graphs]
    assert set(batch) == set(K.INPUT_KEYS)
    assert batch[K.NUM_ATOMS].tolist() == counts
    assert torch.equal(batch[K.BATCH], torch.repeat_interleave(torch.arange(len(graphs)), torch.tensor(counts)))
    assert tuple(batch[K.CELL].shape) == (len(graphs), 3, 3)
    assert tuple(batch[K.PBC].shape) == (len(graphs), 3)
    atom_start, edge_start = 0, 0
    for graph, n, e in zip(graphs, counts, edge_counts):
        torch.testing.assert_close(batch[K.EDGE_INDEX][:, edge_start:edge_start + e], graph[K.EDGE_INDEX] + atom_start)
        torch.testing.assert_close(batch[K.POSITIONS][atom_start:atom_start + n], graph[K.POSITIONS])
        atom_start, edge_start = atom_start + n, edge_start + e
    i, j = batch[K.EDGE_INDEX]
    assert torch.equal(batch[K.BATCH][i], batch[K.BATCH][j]), "an edge crosses structures"
    torch.testing.assert_close(edge_vectors(batch), torch.cat([edge_vectors(g) for g in graphs]))


def test_collate_targets_and_block_diagonal_hessian():
    graphs = [with_targets(from_ase(a, CUTOFF), seed) for seed, a in enumerate(several_structures())]
    batch = collate(graphs)
    n_total = sum(g[K.POSITIONS].shape[0] for g in graphs)
    assert tuple(batch[K.ENERGY].shape) == (len(graphs),)
    assert tuple(batch[K.FORCES].shape) == (n_total, 3)
    assert tuple(batch[K.HESSIAN].shape) == (3 * n_total, 3 * n_total)
    start = 0
    for graph in graphs:
        size = graph[K.HESSIAN].shape[0]
        block = batch[K.HESSIAN][start:start + size]
        torch.testing.assert_close(block[:, start:start + size], graph[K.HESSIAN])
        assert not block[:, :start].any() and not block[:, start + size:].any()
        start += size


def test_collate_real_hessians_from_horm():
    data = np.load(read_shared("horm_sample100/sample_100_DERIVED.npz"))
    graphs = []
    for index in (0, 37, 81):
        atoms_slice = slice(data["atom_offsets"][index], data["atom_offsets"][index + 1])
        hessian_slice = slice(data["hessian_offsets"][index], data["hessian_offsets"][index + 1])
        n = int(data["natoms"][index])
        atoms = Atoms(numbers=data["Z"][atoms_slice], positions=data["pos"][atoms_slice])
        graph = from_ase(atoms, CUTOFF)
        graph[K.HESSIAN] = torch.tensor(data["hessian"][hessian_slice].reshape(3 * n, 3 * n), dtype=torch.float64)
        graphs.append(graph)
    batch = collate(graphs)
    expected = torch.block_diag(*[g[K.HESSIAN] for g in graphs])
    assert torch.equal(batch[K.HESSIAN], expected)
    assert batch[K.HESSIAN].shape[0] == 3 * int(batch[K.NUM_ATOMS].sum())


def test_collate_of_batches_equals_flat_collate():
    graphs = [with_targets(from_ase(a, CUTOFF), seed) for seed, a in enumerate(several_structures())]
    nested = collate([collate(graphs[:2]), graphs[2], collate(graphs[3:])])
    flat = collate(graphs)
    assert set(nested) == set(flat)
    for key in flat:
        assert torch.equal(nested[key], flat[key]), key


def test_collate_preserves_key_order():
    graphs = [with_targets(from_ase(a, CUTOFF), seed) for seed, a in enumerate([ethanol(), copper()])]
    assert list(collate(graphs)) == list(graphs[0])


# --- to_ase ------------------------------------------------------------------------------------


def test_to_ase_round_trips_a_batch():
    structures = several_structures()
    recovered = to_ase(collate([from_ase(a, CUTOFF) for a in structures]))
    assert len(recovered) == len(structures)
    for original, atoms in zip(structures, recovered):
        assert_same_structure(atoms.positions, original, atol=1e-12)
        np.testing.assert_array_equal(atoms.numbers, original.numbers)
        np.testing.assert_array_equal(atoms.cell.array, original.cell.array)
        np.testing.assert_array_equal(atoms.pbc, original.pbc)


def test_to_ase_round_trips_float32_to_single_precision():
    original = slab()
    (atoms,) = to_ase(from_ase(original, CUTOFF, torch.float32))
    assert_same_structure(atoms.positions, original, atol=1e-5)
    np.testing.assert_array_equal(atoms.pbc, original.pbc)


# --- to_device ----------------------------------------------------------------------------------


def test_to_device_casts_only_floating_tensors():
    graph = from_ase(copper(), CUTOFF)
    moved = to_device(graph, "cpu", torch.float32)
    assert moved is not graph
    for key, value in moved.items():
        expected = torch.float32 if graph[key].is_floating_point() else graph[key].dtype
        assert value.dtype == expected, key
        assert value.device.type == "cpu"
    assert graph[K.POSITIONS].dtype == torch.float64, "the input graph must not change"


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_positions_rejected(bad):
    atoms = ethanol()
    atoms.positions[4, 1] = bad
    with pytest.raises(ValueError, match=r"positions contain NaN or inf \(atoms \[4\]\)"):
        from_ase(atoms, CUTOFF)


@pytest.mark.parametrize(
    "cell, message",
    [
        (np.zeros((3, 3)), r"cell vector 0 is zero but pbc\[0\] is True"),
        (np.diag([3.0, 3.0, 0.0]), r"cell vector 2 is zero but pbc\[2\] is True"),
        (np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, 3.0, 0.0]]), "linearly dependent"),
    ],
)
def test_zero_volume_periodic_cell_rejected(cell, message):
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.7, 0.0, 0.0]], cell=cell, pbc=True)
    with pytest.raises(ValueError, match=f"degenerate periodic cell: .*{message}"):
        from_ase(atoms, CUTOFF)
    with pytest.raises(ValueError, match="degenerate periodic cell"):
        validate_structure(atoms.positions, atoms.cell.array, atoms.pbc)


def test_zero_cell_is_fine_without_pbc():
    """A molecule needs no cell: a zero cell without pbc passes and gives the molecule's edges."""
    validate_structure(np.zeros((2, 3)), np.zeros((3, 3)), [False, False, False])
    atoms = ethanol()
    atoms.set_cell(np.zeros((3, 3)))
    atoms.pbc = False
    graph = from_ase(atoms, CUTOFF)
    assert torch.count_nonzero(graph[K.EDGE_SHIFT]) == 0
    assert graph[K.EDGE_INDEX].shape[1] == len(atoms) * (len(atoms) - 1)  # every pair within 5 Å


def test_invalid_cutoff_rejected():
    with pytest.raises(ValueError, match="cutoff must be a finite positive number"):
        from_ase(ethanol(), 0.0)


def test_collate_empty_list_rejected():
    with pytest.raises(ValueError, match="cannot collate an empty list of structures"):
        collate([])


def test_collate_mismatched_keys_rejected():
    graphs = [from_ase(ethanol(), CUTOFF), with_targets(from_ase(copper(), CUTOFF), 0)]
    with pytest.raises(ValueError, match=r"same keys: structure 1 lacks \[\] and has extra \['energy', 'forces', 'hessian'\]"):
        collate(graphs)


def test_collate_mismatched_dtypes_rejected():
    graphs = [from_ase(ethanol(), CUTOFF, torch.float32), from_ase(copper(), CUTOFF, torch.float64)]
    with pytest.raises(ValueError, match="share dtypes: 'positions' is torch.float64 in structure 1"):
        collate(graphs)


def test_collate_wrong_hessian_shape_rejected():
    graph = from_ase(ethanol(), CUTOFF)
    graph[K.HESSIAN] = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"hessian of structure 0 has shape \(3, 3\), expected \(3N, 3N\) = \(27, 27\)"):
        collate([graph])
