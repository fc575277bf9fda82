"""Conversions between ase.Atoms and graph dicts, and batching of graphs."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from molsym.data import keys as K
from molsym.data.neighbours import neighbour_list

_FLOAT_KEYS = (K.POSITIONS, K.CELL, K.EDGE_SHIFT, K.ENERGY, K.FORCES, K.STRESS, K.HESSIAN)


def validate_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Refuse NaN/inf coordinates and periodic cells of zero volume, with a clear error."""
    if not np.isfinite(positions).all():
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise ValueError(f"positions contain NaN or inf (atoms {bad[:10].tolist()})")
    if not np.isfinite(cell).all():
        raise ValueError("cell contains NaN or inf")
    if pbc.any():
        for k in np.nonzero(pbc)[0]:
            if np.linalg.norm(cell[k]) < 1e-8:
                raise ValueError(f"cell vector {k} is zero but pbc[{k}] is True")
        if pbc.all() and abs(np.linalg.det(cell)) < 1e-8:
            raise ValueError("periodic cell has zero volume (its lattice vectors are linearly dependent)")
        periodic = cell[pbc]
        if len(periodic) == 2 and np.linalg.norm(np.cross(periodic[0], periodic[1])) < 1e-8:
            raise ValueError("the two periodic cell vectors are parallel (zero-area cell)")


def from_ase(atoms, cutoff: float, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """One ``ase.Atoms`` -> graph dict with a neighbour list of radius ``cutoff`` (Å).

    Stored energy, forces and stress (from ``atoms.calc`` results, if any) are
    not read here; dataset readers add targets.
    """
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    validate_structure(positions, cell, pbc)
    edge_index, shift = neighbour_list(positions, cell, pbc, cutoff)
    n = len(atoms)
    return {
        K.POSITIONS: torch.tensor(positions, dtype=dtype),
        K.ATOMIC_NUMBERS: torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long),
        K.BATCH: torch.zeros(n, dtype=torch.long),
        K.CELL: torch.tensor(cell, dtype=dtype).unsqueeze(0),
        K.PBC: torch.tensor(pbc).unsqueeze(0),
        K.EDGE_INDEX: torch.from_numpy(edge_index),
        K.EDGE_SHIFT: torch.tensor(shift, dtype=dtype),
        K.NUM_ATOMS: torch.tensor([n], dtype=torch.long),
    }


def collate(graphs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate graphs into one batch: atom indices offset, batch index set, Hessians block-diagonal."""
    if not graphs:
        raise ValueError("cannot batch an empty list of structures")
    keys = set(graphs[0])
    for g in graphs[1:]:
        if set(g) != keys:
            raise ValueError(f"structures in one batch must have the same keys: {sorted(keys)} vs {sorted(g)}")
    counts = [int(g[K.POSITIONS].shape[0]) for g in graphs]
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        if key == K.EDGE_INDEX:
            out[key] = torch.cat([g[key] + int(o) for g, o in zip(graphs, offsets)], dim=1)
        elif key == K.BATCH:
            out[key] = torch.cat([torch.full((c,), b, dtype=torch.long) for b, c in enumerate(counts)])
        elif key == K.HESSIAN:
            out[key] = torch.block_diag(*[g[key] for g in graphs])
        else:
            out[key] = torch.cat([g[key] for g in graphs], dim=0)
    return out


def to_device(graph: dict[str, torch.Tensor], device=None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Move a graph to ``device`` and cast its floating-point tensors to ``dtype``."""
    out = {}
    for key, value in graph.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.to(device) if device is not None else value
    return out


def to_ase(graph: dict[str, torch.Tensor]) -> list:
    """Graph dict (one structure or a batch) -> list of ``ase.Atoms`` (positions, numbers, cell, pbc)."""
    from ase import Atoms

    batch = graph[K.BATCH].cpu().numpy()
    num_graphs = graph[K.CELL].shape[0]
    positions = graph[K.POSITIONS].detach().cpu().double().numpy()
    numbers = graph[K.ATOMIC_NUMBERS].cpu().numpy()
    cells = graph[K.CELL].detach().cpu().double().numpy()
    pbcs = graph[K.PBC].cpu().numpy()
    result = []
    for b in range(num_graphs):
        mask = batch == b
        result.append(Atoms(numbers=numbers[mask], positions=positions[mask], cell=cells[b], pbc=pbcs[b]))
    return result
