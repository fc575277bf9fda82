"""Neighbour lists with periodic boundaries, small cells and isolated atoms.

Built on vesin's cell lists (linear in the number of atoms). The list is full
(directed): it holds every pair (i, j) with

    |positions[j] - positions[i] + S @ cell| < cutoff,

S an integer lattice translation that is zero along open (non-periodic)
directions, i != j, or i == j through a non-zero S (an atom seeing its own
periodic image, which happens when the cell is thinner than the cutoff).

Before the search, :func:`molsym.data.lattice.check_neighbour_density`
refuses structures that would give more than
``molsym.data.lattice.MAX_NEIGHBOURS_PER_ATOM`` neighbours per atom (a
degenerate cell, atoms piled up), so no input makes the search hang or
exhaust memory. Three preparations make vesin's cell list robust for any
input; none changes the set of pairs:

* the periodic lattice vectors are replaced by a Minkowski-reduced basis of
  the same lattice (:func:`molsym.data.lattice.reduced_lattice`; shifts are
  converted back), so skewed cells cost no more than orthogonal ones;
* atoms are wrapped into the reduced cell along periodic directions (the
  integer translations are added back to the shifts), so unwrapped
  trajectories give bounded coordinates;
* along open directions, groups of atoms separated by an empty gap wider than
  twice the cutoff are moved closer (down to that gap). Such groups cannot
  share a pair, and a far-away atom (a desorbed molecule in a slab, a
  fragment flying off) otherwise creates an enormous bounding box whose cell
  list costs time quadratic in its extent.
"""
from __future__ import annotations

import numpy as np
import vesin

from molsym.data.lattice import check_neighbour_density, open_directions, reduced_lattice
from molsym.data.structure_checks import StructureError, located

# Lattice vectors shorter than this (Å) count as missing.
_MIN_VECTOR_LENGTH = 1e-8
# Volume (or area) spanned by the unit periodic lattice vectors below which they count as dependent.
_MIN_UNIT_VOLUME = 1e-8


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Directed neighbour pairs within ``cutoff``, with Cartesian lattice shifts.

    Args:
        positions: (N, 3) Å, Cartesian; need not lie inside the cell.
        cell: (3, 3) Å, lattice vectors as rows; rows along open directions are ignored
            (they may be zero).
        pbc: (3,) bool, periodic along each lattice vector.
        cutoff: Å, finite and > 0.
    Returns:
        edge_index: (2, E) int64, (i, j) means atom j is a neighbour of atom i.
        edge_shift: (E, 3) float64 Å, Cartesian lattice translation, so that
            r_ij = positions[j] - positions[i] + edge_shift; zero along open directions.
        Edges are sorted by (i, j, integer shift).
    Raises:
        ValueError: on malformed shapes, NaN/inf, a non-positive cutoff or a
            degenerate periodic cell.
    """
    positions, cell, pbc = _as_arrays(positions, cell, pbc)
    edge_index, cell_shifts = lattice_neighbours(positions, cell, pbc, cutoff)
    return edge_index, cartesian_shifts(cell_shifts, cell, pbc)


def lattice_neighbours(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float,
                       where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`neighbour_list`, with integer lattice shifts instead of Cartesian ones.

    Returns:
        edge_index: (2, E) int64.
        cell_shifts: (E, 3) int64, S with r_ij = positions[j] - positions[i] + S @ cell;
            S[:, k] == 0 wherever pbc[k] is False. Same convention as ASE's
            ``neighbor_list("ijS", ...)``.
    ``where`` ("file, frame 3") prefixes error messages.
    """
    positions, cell, pbc = _as_arrays(positions, cell, pbc)
    _, _, edge_index, cell_shifts = _search(positions, cell, pbc, cutoff, where)
    return edge_index, cell_shifts


def wrapped_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float,
                           where: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions wrapped into the reduced cell, with the neighbour list of the wrapped positions.

    Returns:
        wrapped: (N, 3) Å, each atom translated by a lattice vector (along periodic
            directions only) into the Minkowski-reduced cell; the same structure.
        edge_index: (2, E) int64. edge_shift: (E, 3) float64 Å, with
            r_ij = wrapped[j] - wrapped[i] + edge_shift.
    """
    positions, cell, pbc = _as_arrays(positions, cell, pbc)
    wrapped, images, edge_index, cell_shifts = _search(positions, cell, pbc, cutoff, where)
    i, j = edge_index
    return wrapped, edge_index, cartesian_shifts(cell_shifts + images[j] - images[i], cell, pbc)


def _search(positions, cell, pbc, cutoff, where):
    """(wrapped (N, 3), images (N, 3) int64 with wrapped = positions - images @ cell,
    edge_index (2, E), shifts S (E, 3) int64 referring to ``positions``), sorted by (i, j, S)."""
    check_structure(positions, cell, pbc, where)
    check_cutoff(cutoff)
    if len(positions) == 0:
        empty = np.zeros((0, 3), dtype=np.int64)
        return positions, empty, np.zeros((2, 0), dtype=np.int64), empty
    reduced, op = reduced_lattice(cell, pbc)
    check_neighbour_density(positions, reduced, pbc, cutoff, where)
    wrapped, reduced_images = wrap_positions(positions, reduced, pbc)
    packed = pack_open_directions(wrapped, reduced, pbc, cutoff)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = calculator.compute(points=packed, box=_periodic_rows(reduced, pbc), periodic=pbc, quantities="ijS")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    s = s.astype(np.int64)
    if reduced_images.any():
        # vesin's shifts refer to the wrapped positions: undo the wrapping.
        s += reduced_images[i] - reduced_images[j]
    s = s @ op  # reduced-lattice integers -> integers of the given cell
    order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    return wrapped, reduced_images @ op, np.stack((i[order], j[order])), s[order]


def cartesian_shifts(cell_shifts: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Integer lattice shifts S (E, 3) -> Cartesian translations S @ cell (E, 3) Å, open rows ignored.

    Written as three broadcasts rather than a matmul: a BLAS call on a tall
    (E, 3) x (3, 3) product is slow and contends with vesin's threads.
    """
    shifts = np.zeros(cell_shifts.shape, dtype=np.float64)
    for k in np.nonzero(pbc)[0]:
        shifts += cell_shifts[:, k, None] * cell[k]
    return shifts


def check_cutoff(cutoff: float) -> None:
    """Refuse a cutoff that is not a finite positive number (Å)."""
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a finite positive number of Å, got {cutoff!r}")


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, where: str | None = None) -> None:
    """Refuse NaN/inf coordinates and degenerate periodic cells, naming the problem.

    Args:
        positions: (N, 3) Å.
        cell: (3, 3) Å, lattice vectors as rows.
        pbc: (3,) bool.
        where: "file, frame 3" put in front of messages.
    Raises:
        StructureError (a ValueError): positions or cell contain NaN/inf; a periodic
            direction has a zero lattice vector; the periodic lattice vectors are
            linearly dependent (a fully periodic cell of zero volume, or a slab of zero area).
    """
    if not np.isfinite(positions).all():
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise StructureError(located(where, f"positions contain NaN or inf (atoms {bad[:10].tolist()})"))
    if not np.isfinite(cell[pbc]).all():
        raise StructureError(located(where, f"cell contains NaN or inf along a periodic direction: {cell.tolist()}"))
    lengths = np.linalg.norm(cell, axis=1)
    for k in np.nonzero(pbc)[0]:
        if lengths[k] < _MIN_VECTOR_LENGTH:
            raise StructureError(located(where, f"degenerate periodic cell: cell vector {k} is zero but pbc[{k}] is True"))
    periodic = cell[pbc] / lengths[pbc, None]
    if len(periodic) > 1 and np.sqrt(abs(np.linalg.det(periodic @ periodic.T))) < _MIN_UNIT_VOLUME:
        directions = np.nonzero(pbc)[0].tolist()
        raise StructureError(located(where,
            f"degenerate periodic cell: the lattice vectors along periodic directions {directions} are "
            f"linearly dependent (zero volume or area), cell={cell.tolist()}"
        ))


def wrap_positions(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translate atoms by lattice vectors into the cell, along periodic directions only.

    Returns:
        wrapped: (N, 3) Å, positions - images @ cell.
        images: (N, 3) int64 lattice translations removed, zero along open directions.
    """
    images = np.zeros(positions.shape, dtype=np.int64)
    if not pbc.any():
        return positions, images
    basis = _periodic_rows(cell, pbc)
    basis[~pbc] = open_directions(cell, pbc)
    fractional = np.linalg.solve(basis.T, positions.T).T
    images[:, pbc] = np.floor(fractional[:, pbc]).astype(np.int64)
    return positions - cartesian_shifts(images, cell, pbc), images


def pack_open_directions(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """Close gaps wider than ``2 * cutoff`` along open directions (see the module docstring).

    Each group of atoms moves rigidly along a direction orthogonal to every
    periodic lattice vector, so distances within a group, their lattice images
    and which pairs are within the cutoff are unchanged.

    Args:
        positions: (N, 3) Å. cell: (3, 3) Å. pbc: (3,) bool. cutoff: Å.
    Returns:
        (N, 3) Å, the same array when no gap needs closing.
    """
    max_gap = 2.0 * cutoff
    for direction in open_directions(cell, pbc):
        height = positions @ direction
        order = np.argsort(height, kind="stable")
        excess = np.clip(np.diff(height[order]) - max_gap, 0.0, None)
        if not excess.any():
            continue
        drop = np.empty(len(height))
        drop[order] = np.concatenate(([0.0], np.cumsum(excess)))
        positions = positions - drop[:, None] * direction
    return positions


def _periodic_rows(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(3, 3) copy of ``cell`` with the rows of open directions set to zero."""
    return np.where(pbc[:, None], cell, 0.0)


def _as_arrays(positions, cell, pbc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.shape == ():
        pbc = np.full(3, bool(pbc))
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3), got {cell.shape}")
    if pbc.shape != (3,):
        raise ValueError(f"pbc must be a bool or 3 bools, got shape {pbc.shape}")
    return positions, cell, pbc
