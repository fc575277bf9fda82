"""Checks that refuse structures no potential can evaluate, with errors naming the atoms.

``MIN_DISTANCE`` is the closest two nuclei (or an atom and a periodic image
of itself or of another atom) may be. At zero distance the pair vector has
no direction and energies and forces become NaN; a little above zero the
radial basis (which grows as 1/r) and float32 rounding of the coordinates
make the numbers meaningless. No chemistry comes near: the shortest bond,
H2's, is 0.74 Å, and the inner turning point of two atoms colliding at
several eV is above 0.3 Å. 0.1 Å refuses only what is certainly an input
error (a duplicated atom, a wrong unit, a missing lattice vector) while
leaving ample room for high-energy collisions in training data.
"""
from __future__ import annotations

import numpy as np

MIN_DISTANCE = 0.1  # Å

_SHOWN = 5  # offending atoms or pairs listed in a message


class StructureError(ValueError):
    """A structure that cannot be evaluated: NaN coordinates, unknown elements, coincident atoms,
    a degenerate cell. The message names the problem, the atoms and, when known, the file and frame."""


def located(where: str | None, message: str) -> str:
    """``message`` prefixed by ``where`` ("file, frame 3") when given."""
    return f"{where}: {message}" if where else message


def check_atomic_numbers(numbers: np.ndarray, where: str | None = None) -> None:
    """Refuse atomic numbers outside 1..118, naming the offending atoms by index (0-based)."""
    numbers = np.asarray(numbers).reshape(-1)
    bad = np.flatnonzero((numbers < 1) | (numbers > 118))
    if bad.size:
        listed = ", ".join(f"atom {i} (Z = {int(numbers[i])})" for i in bad[:_SHOWN])
        more = f" and {bad.size - _SHOWN} more" if bad.size > _SHOWN else ""
        raise StructureError(located(where, f"atomic numbers must lie in 1..118, but {bad.size} atom(s) do not: "
                                            f"{listed}{more}"))


def check_min_distance(positions: np.ndarray, edge_index: np.ndarray, edge_shift: np.ndarray,
                       where: str | None = None, minimum: float = MIN_DISTANCE) -> None:
    """Refuse pairs of atoms closer than ``minimum`` (Å), naming the closest pairs and their distances.

    Args:
        positions: (N, 3) Å, float64. edge_index: (2, E) int64. edge_shift: (E, 3) Å, so that
            r_ij = positions[j] - positions[i] + edge_shift (``molsym.data.neighbours``).
    """
    if edge_index.shape[1] == 0:
        return
    i, j = edge_index
    vectors = positions[j] - positions[i] + edge_shift
    lengths = np.sqrt(np.einsum("ed,ed->e", vectors, vectors))
    close = np.flatnonzero((lengths < minimum) & ((i < j) | ((i == j) & _positive(edge_shift))))  # each pair once
    if close.size == 0:
        return
    close = close[np.argsort(lengths[close], kind="stable")]
    pairs = []
    for e in close[:_SHOWN]:
        image = " (a periodic image)" if np.any(edge_shift[e]) else ""
        pairs.append(f"atoms {int(i[e])} and {int(j[e])}{image} at {lengths[e]:.3g} Å")
    more = f" and {close.size - _SHOWN} more pair(s)" if close.size > _SHOWN else ""
    raise StructureError(located(where, f"atoms closer than the minimum distance of {minimum} Å "
                                        f"(coincident or nearly coincident atoms): {'; '.join(pairs)}{more}"))


def _positive(shifts: np.ndarray) -> np.ndarray:
    """(E,) bool: the first non-zero component of each shift (E, 3) is positive (one of each +S, -S)."""
    first = np.argmax(shifts != 0, axis=1)
    return shifts[np.arange(len(shifts)), first] > 0
