"""Periodic lattices before a neighbour search: reduction to short vectors and a neighbour-count guard.

A cell such as a1 = [2, 0, 0], a2 = [2, 1e-3, 0] spans a lattice whose
shortest translation is 1e-3 Å. Given as it is, a cell-list search walks
every image box between the skewed vectors (seconds to hours), and even a
fast search returns ~1e5 neighbours per atom. Two steps keep every input
bounded:

* :func:`reduced_lattice` replaces the periodic vectors by a Minkowski-reduced
  basis of the same lattice (shortest vectors, nearly orthogonal), so the
  search costs what the neighbour count costs;
* :func:`check_neighbour_density` estimates, before the search, how many
  neighbours each atom would get (:func:`estimated_neighbours`) and refuses
  more than ``MAX_NEIGHBOURS_PER_ATOM``.

``MAX_NEIGHBOURS_PER_ATOM`` = 5000: the densest solids hold about 0.2 atoms/Å³,
so a 6 Å cutoff sphere holds ~200 neighbours and even a 15 Å one ~3000. An
estimate above 5000 means a degenerate cell, a wrong unit or atoms piled up,
and the search and the model would exhaust memory.
"""
from __future__ import annotations

import math

import numpy as np

from molsym.data.structure_checks import StructureError, located

MAX_NEIGHBOURS_PER_ATOM = 5000


def reduced_lattice(cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Minkowski-reduced basis of the periodic lattice (ASE's ``minkowski_reduce``).

    Args:
        cell: (3, 3) Å, lattice vectors as rows. pbc: (3,) bool.
    Returns:
        reduced: (3, 3) Å, ``op @ cell``; rows of open directions are those of ``cell``.
        op: (3, 3) int64 unimodular, identity on open directions. Integer shifts
            transform as S_cell = S_reduced @ op.
    """
    identity = np.eye(3, dtype=np.int64)
    if not pbc.any():
        return cell.copy(), identity
    from ase.geometry import minkowski_reduce

    _, op = minkowski_reduce(cell, pbc=pbc)
    op = np.asarray(op, dtype=np.int64)
    if not np.array_equal(op[~pbc], identity[~pbc]) or np.any(op[:, ~pbc][pbc]):
        op = identity  # never mix open and periodic directions (not expected from ASE)
    return op @ cell, op


def lattice_heights(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(k,) Å: for each periodic vector, its distance to the span of the other periodic vectors.

    The widths of the cell; an atom's images along a vector repeat every height.
    """
    periodic = cell[pbc]
    volume = _gram_volume(periodic)
    return np.array([volume / _gram_volume(np.delete(periodic, k, axis=0)) for k in range(len(periodic))])


def estimated_neighbours(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> float:
    """Expected neighbours per atom within ``cutoff``, from the density (no search).

    The larger of two estimates: N atoms spread over the effective volume
    (the periodic cell's volume, area or length times the extent of the
    atoms along open directions, at least the cutoff sphere's), and the
    lattice translations within the cutoff (an atom's own images, from the
    heights of the reduced cell ``cell``).

    Args:
        positions: (N, 3) Å. cell: (3, 3) Å, ideally reduced (:func:`reduced_lattice`). pbc: (3,) bool.
        cutoff: Å.
    """
    n = len(positions)
    d = int(pbc.sum())
    sphere = _ball_volume(3, cutoff)
    volume = _gram_volume(cell[pbc]) if d else 1.0
    if d < 3:
        floor = (sphere / _ball_volume(d, cutoff)) ** (1.0 / (3 - d))  # a layer this thick fills the ball
        for direction in open_directions(cell, pbc):
            height = positions @ direction
            volume *= max(float(height.max() - height.min()), floor)
    density = n * sphere / volume if volume > 0 else math.inf
    heights = lattice_heights(cell, pbc)
    thin = heights[heights < 2.0 * cutoff]
    images = _ball_volume(len(thin), cutoff) / float(np.prod(thin)) if thin.size else 1.0
    return max(density, images)


def check_neighbour_density(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float,
                            where: str | None = None, limit: float = MAX_NEIGHBOURS_PER_ATOM) -> None:
    """Refuse a structure whose estimated neighbours per atom (:func:`estimated_neighbours`) exceed ``limit``.

    The error gives the estimate (per atom and in total), the cell's heights and the cutoff.
    """
    estimate = estimated_neighbours(positions, cell, pbc, cutoff)
    if estimate <= limit:
        return
    heights = lattice_heights(cell, pbc)
    shape = f"the periodic cell's shortest height is {heights.min():.3g} Å" if heights.size else "no periodic cell"
    raise StructureError(located(where, (
        f"the neighbour list would hold about {estimate:.3g} neighbours per atom "
        f"({estimate * len(positions):.3g} edges for {len(positions)} atoms) within the cutoff of {cutoff} Å, "
        f"more than the limit of {limit} (real matter: a few hundred); {shape}. A degenerate cell "
        f"(nearly dependent lattice vectors), a wrong length unit or atoms piled on each other; refused "
        f"before the search, which would exhaust memory")))


def _gram_volume(vectors: np.ndarray) -> float:
    """Volume (area, length) spanned by the rows of ``vectors``; 1 for none."""
    if len(vectors) == 0:
        return 1.0
    return math.sqrt(max(float(np.linalg.det(vectors @ vectors.T)), 0.0))


def _ball_volume(dimension: int, radius: float) -> float:
    """Volume of a ``dimension``-ball: 1, 2r, pi r^2, 4/3 pi r^3."""
    return math.pi ** (dimension / 2) / math.gamma(dimension / 2 + 1) * radius**dimension


def open_directions(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(3 - k, 3) orthonormal directions orthogonal to the k periodic lattice vectors."""
    if not pbc.any():
        return np.eye(3)
    _, _, vt = np.linalg.svd(cell[pbc], full_matrices=True)
    return vt[int(pbc.sum()):]
