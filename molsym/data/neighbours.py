"""Neighbour lists with periodic boundaries, small cells and isolated atoms.

Built on vesin (cell lists, linear in N). Returns every directed pair (i, j),
i != j or i == j through a non-zero lattice translation, with
|pos[j] - pos[i] + shift| < cutoff.
"""
from __future__ import annotations

import numpy as np
import vesin


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Directed neighbour pairs within ``cutoff`` (Å).

    Args:
        positions: (N, 3) Å.
        cell: (3, 3) Å, lattice vectors as rows; ignored along non-periodic directions.
        pbc: (3,) bool.
        cutoff: Å, > 0.
    Returns:
        edge_index (2, E) int64 and edge_shift (E, 3) float64 Å (Cartesian lattice
        translation, r_ij = pos[j] - pos[i] + shift), sorted by (i, j).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    n = positions.shape[0]
    if n == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3))
    box = cell.copy()
    if not pbc.all():
        # vesin needs a box even along open directions: replace those vectors
        # by long orthogonal ones that cannot create images within the cutoff.
        box = _box_with_open_directions(positions, cell, pbc, cutoff)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = calculator.compute(points=positions, box=box, periodic=[bool(p) for p in pbc], quantities="ijS")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    s = s.astype(np.float64)
    order = np.lexsort((j, i))
    i, j, s = i[order], j[order], s[order]
    shift = s @ cell if pbc.any() else np.zeros((len(i), 3))
    # integer shifts along open directions are always zero
    return np.stack((i, j)), shift


def _box_with_open_directions(positions, cell, pbc, cutoff) -> np.ndarray:
    if not pbc.any():
        return np.zeros((3, 3))
    box = cell.copy()
    periodic = [k for k in range(3) if pbc[k]]
    extent = np.ptp(positions, axis=0).max() + 2 * cutoff + 1.0
    for k in range(3):
        if pbc[k]:
            continue
        normal = np.zeros(3)
        if len(periodic) == 2:
            normal = np.cross(cell[periodic[0]], cell[periodic[1]])
        if np.linalg.norm(normal) < 1e-12:
            normal = np.eye(3)[k]
        box[k] = normal / np.linalg.norm(normal) * extent
    return box
