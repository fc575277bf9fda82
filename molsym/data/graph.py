"""Conversions between ``ase.Atoms`` and graph dicts, and batching of graphs.

A graph is a plain ``dict[str, torch.Tensor]`` with the keys of
:mod:`molsym.data.keys`. :func:`from_ase` builds one structure (B = 1);
:func:`collate` concatenates structures (or batches) into one batch whose atoms
stay grouped by structure, in order.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from molsym.data import keys as K
from molsym.data.lattice import check_neighbour_density, reduced_lattice
from molsym.data.neighbours import check_structure, wrapped_neighbour_list
from molsym.data.structure_checks import MIN_DISTANCE, check_atomic_numbers, check_min_distance


def validate_structure(positions: np.ndarray, cell: np.ndarray, pbc, where: str | None = None) -> None:
    """Refuse NaN/inf coordinates and degenerate periodic cells with a ValueError naming the problem.

    Args:
        positions: (N, 3) Å. cell: (3, 3) Å, lattice vectors as rows. pbc: (3,) bool.
        where: "file, frame 3" put in front of the message.
    """
    check_structure(
        np.asarray(positions, dtype=np.float64).reshape(-1, 3),
        np.asarray(cell, dtype=np.float64).reshape(3, 3),
        np.asarray(pbc, dtype=bool).reshape(3),
        where,
    )


def check_atoms(atoms, cutoff: float, where: str | None = None) -> None:
    """Every check :func:`from_ase` makes, without building the neighbour list of radius ``cutoff``.

    Atomic numbers, finite coordinates, a sane cell, the estimated neighbour count at
    ``cutoff`` (Å) and the minimum distance (a search of radius ``MIN_DISTANCE`` only,
    much cheaper than the full list). Raises the same ``StructureError`` as :func:`from_ase`.
    """
    check_atomic_numbers(atoms.get_atomic_numbers(), where)
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    check_structure(positions, cell, pbc, where)
    if len(positions) == 0:
        return
    check_neighbour_density(positions, reduced_lattice(cell, pbc)[0], pbc, cutoff, where)
    check_min_distance(*wrapped_neighbour_list(positions, cell, pbc, MIN_DISTANCE, where), where)


def from_ase(atoms, cutoff: float, dtype: torch.dtype = torch.float64, where: str | None = None
             ) -> dict[str, torch.Tensor]:
    """One ``ase.Atoms`` -> graph dict with a neighbour list of radius ``cutoff`` (Å).

    Returns the input keys: positions (N, 3), atomic_numbers (N,) int64,
    batch (N,) int64 zeros, cell (1, 3, 3), pbc (1, 3) bool, edge_index (2, E)
    int64, edge_shift (E, 3), num_atoms (1,) int64; floating tensors in ``dtype``.

    Positions are those of the same structure placed for precision: each atom
    wrapped by a lattice vector into the (reduced) cell along periodic
    directions, then all translated so that the centre of their bounding box
    is the origin. Pair vectors, energies, forces, stress and Hessians are
    unchanged (exactly, in float64), and float32 keeps its accuracy however
    far from the origin the structure sits or however far atoms have
    diffused. The neighbour list and this placement are computed in float64
    whatever ``dtype``.

    Stored energy, forces and stress (``atoms.calc`` results) are not read
    here; dataset readers add targets.

    Raises:
        StructureError (a ValueError), prefixed by ``where`` ("file, frame 3")
        when given: atomic numbers outside 1..118, NaN/inf coordinates, a
        degenerate cell, an estimated neighbour count beyond
        ``molsym.data.lattice.MAX_NEIGHBOURS_PER_ATOM``, or atoms closer than
        ``molsym.data.structure_checks.MIN_DISTANCE``.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype}")
    numbers = np.asarray(atoms.get_atomic_numbers())
    check_atomic_numbers(numbers, where)
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    wrapped, edge_index, edge_shift = wrapped_neighbour_list(positions, cell, pbc, cutoff, where)
    check_min_distance(wrapped, edge_index, edge_shift, where)
    if len(wrapped):
        wrapped = wrapped - 0.5 * (wrapped.min(axis=0) + wrapped.max(axis=0))
    n = len(atoms)
    return {
        K.POSITIONS: torch.tensor(wrapped, dtype=dtype),
        K.ATOMIC_NUMBERS: torch.tensor(numbers, dtype=torch.long),
        K.BATCH: torch.zeros(n, dtype=torch.long),
        K.CELL: torch.tensor(cell, dtype=dtype).unsqueeze(0),
        K.PBC: torch.tensor(pbc, dtype=torch.bool).unsqueeze(0),
        K.EDGE_INDEX: torch.from_numpy(edge_index),
        K.EDGE_SHIFT: torch.tensor(edge_shift, dtype=dtype),
        K.NUM_ATOMS: torch.tensor([n], dtype=torch.long),
    }


def collate(graphs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate graphs (single structures or batches) into one batch.

    Per-atom, per-edge and per-structure tensors are concatenated in order;
    edge_index is offset by the atoms before each graph, batch by the
    structures before it; hessian ((3n, 3n) each) becomes block-diagonal
    (3N, 3N). Every graph must have the same keys and dtypes.
    """
    _check_batchable(graphs)
    atom_offsets = _offsets([g[K.POSITIONS].shape[0] for g in graphs])
    graph_offsets = _offsets([g[K.CELL].shape[0] for g in graphs])
    out: dict[str, torch.Tensor] = {}
    for key in graphs[0]:
        values = [g[key] for g in graphs]
        if key == K.EDGE_INDEX:
            out[key] = torch.cat([v + o for v, o in zip(values, atom_offsets)], dim=1)
        elif key == K.BATCH:
            out[key] = torch.cat([v + o for v, o in zip(values, graph_offsets)])
        elif key == K.HESSIAN:
            out[key] = torch.block_diag(*values)
        else:
            out[key] = torch.cat(values, dim=0)
    return out


def to_device(graph: dict[str, torch.Tensor], device=None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Move every tensor of ``graph`` to ``device`` and cast its floating-point tensors to ``dtype``.

    Integer and bool tensors (indices, numbers, pbc) keep their dtype. Returns a new dict.
    """
    out = {}
    for key, value in graph.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.to(device) if device is not None else value
    return out


def to_ase(graph: dict[str, torch.Tensor]) -> list:
    """Graph dict (one structure or a batch) -> list of ``ase.Atoms``, one per structure.

    Restores the structure: positions (Å) as the graph holds them (:func:`from_ase`
    wraps and centres them, so they equal the original up to one rigid translation
    and lattice translations of single atoms), atomic numbers, cell (Å) and pbc;
    targets are not copied.
    """
    from ase import Atoms

    batch = graph[K.BATCH].cpu().numpy()
    positions = graph[K.POSITIONS].detach().cpu().double().numpy()
    numbers = graph[K.ATOMIC_NUMBERS].cpu().numpy()
    cells = graph[K.CELL].detach().cpu().double().numpy()
    pbcs = graph[K.PBC].cpu().numpy().astype(bool)
    result = []
    for b in range(cells.shape[0]):
        mask = batch == b
        result.append(Atoms(numbers=numbers[mask], positions=positions[mask], cell=cells[b], pbc=pbcs[b]))
    return result


def _check_batchable(graphs: Sequence[dict[str, torch.Tensor]]) -> None:
    """Raise a ValueError naming the problem if ``graphs`` cannot be concatenated."""
    if len(graphs) == 0:
        raise ValueError("cannot collate an empty list of structures")
    first = graphs[0]
    for index, graph in enumerate(graphs):
        if set(graph) != set(first):
            missing = sorted(set(first) - set(graph))
            extra = sorted(set(graph) - set(first))
            raise ValueError(
                f"structures in one batch must have the same keys: structure {index} lacks {missing} "
                f"and has extra {extra} compared with structure 0"
            )
        for key, value in graph.items():
            if value.dtype != first[key].dtype:
                raise ValueError(
                    f"structures in one batch must share dtypes: '{key}' is {value.dtype} in structure "
                    f"{index} but {first[key].dtype} in structure 0"
                )
        if K.HESSIAN in graph:
            size = 3 * graph[K.POSITIONS].shape[0]
            if tuple(graph[K.HESSIAN].shape) != (size, size):
                raise ValueError(
                    f"hessian of structure {index} has shape {tuple(graph[K.HESSIAN].shape)}, "
                    f"expected (3N, 3N) = ({size}, {size})"
                )


def _offsets(counts: list[int]) -> list[int]:
    """Exclusive cumulative sum: [0, c0, c0 + c1, ...] (one entry per count)."""
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(int).tolist()
