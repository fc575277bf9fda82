"""Data statistics for a model's energy reference: E0 by least squares, shift and scale.

With E0 (per-element energies, a :class:`LinearReference`) the residual
energy of a structure is E - sum_i E0[Z_i]. The readout's ``shift`` is the
mean residual per atom (eV/atom) and its ``scale`` the RMS of the force
components (eV/Å), as in MACE and nequip; without forces the scale falls back
to the standard deviation of the residual per atom.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from molsym.data import keys as K
from molsym.data.readers.references import LinearReference, element_counts
from molsym.data.readers.sample import Sample


def iter_samples(data, max_structures: int | None = None) -> Iterator[Sample]:
    """Samples of a list of :class:`Sample` or of a dataset with ``sample(i)`` (:class:`AtomsDataset`, :class:`AseDbDataset`).

    ``max_structures`` takes that many, evenly spaced over the data (for large LMDBs).
    """
    length = len(data)
    if max_structures is not None and max_structures < length:
        positions = np.linspace(0, length - 1, max_structures).round().astype(int)
    else:
        positions = range(length)
    get = data.__getitem__ if isinstance(data, (list, tuple)) else data.sample
    for position in positions:
        yield get(int(position))


def fit_linear_reference(samples: Iterable[Sample], elements: Iterable[int] | None = None) -> LinearReference:
    """E0 by least squares: energy ≈ sum over elements of count_Z * E0[Z].

    Args:
        samples: structures with an energy (eV); those without are skipped.
        elements: atomic numbers to fit (default: every element present).
    Returns:
        :class:`LinearReference` with E0 (eV/atom) for the fitted elements.
    Warns:
        when the compositions do not determine E0 uniquely (e.g. every
        structure has the same composition, as in 3BPA); the minimum-norm
        solution is returned then, and isolated-atom energies are the better E0.
    """
    numbers, energies = [], []
    for sample in samples:
        if K.ENERGY in sample.targets:
            numbers.append(sample.atoms.numbers)
            energies.append(float(sample.targets[K.ENERGY][0]))
    if not energies:
        raise ValueError("fit_linear_reference: no structure has an energy")
    counts = element_counts(numbers)
    present = np.flatnonzero(counts.sum(axis=0))
    columns = np.array(sorted(set(elements)), dtype=np.int64) if elements is not None else present
    missing = sorted(set(present.tolist()) - set(columns.tolist()))
    if missing:
        raise ValueError(f"fit_linear_reference: elements {missing} occur in the data but are not fitted")
    design = counts[:, columns].astype(np.float64)
    solution, _, rank, _ = np.linalg.lstsq(design, np.asarray(energies), rcond=None)
    if rank < len(columns):
        warnings.warn(
            f"fit_linear_reference: {len(energies)} structures determine only {rank} of {len(columns)} "
            f"per-element energies (too few distinct compositions); returning the minimum-norm solution",
            stacklevel=2,
        )
    return LinearReference.from_dict(dict(zip(columns.tolist(), solution.tolist())))


@dataclass(frozen=True)
class DataStatistics:
    """Statistics of a data set after subtracting E0.

    Attributes:
        shift: eV/atom, mean over structures of (E - E0) / n.
        scale: eV/Å, ``force_rms`` if forces were seen, else ``energy_per_atom_std``.
        energy_per_atom_std: eV/atom, standard deviation of (E - E0) / n.
        force_rms: eV/Å, sqrt(mean of squared force components) (None without forces).
        avg_num_neighbours: mean number of neighbours per atom within the cutoff
            (None unless a cutoff was given).
        num_structures: structures with an energy.
        num_atoms: atoms in all structures seen.
    """

    shift: float
    scale: float
    energy_per_atom_std: float
    force_rms: float | None
    avg_num_neighbours: float | None
    num_structures: int
    num_atoms: int


def compute_statistics(samples: Iterable[Sample], reference: LinearReference | None = None,
                       cutoff: float | None = None, exclude_fixed: bool = False) -> DataStatistics:
    """Shift, scale and neighbour count of ``samples`` (see :class:`DataStatistics`).

    Args:
        samples: labelled structures (e.g. ``iter_samples(dataset)``).
        reference: E0 subtracted before the per-atom residuals (None: raw energies).
        cutoff: Å; if given, count neighbours with molsym's neighbour list.
        exclude_fixed: leave fixed atoms (``fixed`` target) out of the force RMS.
    """
    from molsym.data.neighbours import neighbour_list

    residuals, squared_force_sum, force_count, atoms_total, edges_total = [], 0.0, 0, 0, 0
    for index, sample in enumerate(samples):
        atoms = sample.atoms
        n = len(atoms)
        atoms_total += n
        if K.ENERGY in sample.targets:
            energy = float(sample.targets[K.ENERGY][0])
            if reference is not None:
                energy -= float(reference.energy(atoms.numbers, f"structure {index}")[0])
            residuals.append(energy / max(n, 1))
        if K.FORCES in sample.targets:
            forces = sample.targets[K.FORCES]
            if exclude_fixed and K.FIXED in sample.targets:
                forces = forces[~sample.targets[K.FIXED]]
            squared_force_sum += float(np.sum(forces**2))
            force_count += forces.size
        if cutoff is not None:
            edge_index, _ = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
            edges_total += edge_index.shape[1]
    if not residuals:
        raise ValueError("compute_statistics: no structure has an energy")
    residuals = np.asarray(residuals)
    force_rms = float(np.sqrt(squared_force_sum / force_count)) if force_count else None
    std = float(residuals.std())
    return DataStatistics(
        shift=float(residuals.mean()),
        scale=force_rms if force_rms is not None else std,
        energy_per_atom_std=std,
        force_rms=force_rms,
        avg_num_neighbours=edges_total / atoms_total if cutoff is not None and atoms_total else None,
        num_structures=len(residuals),
        num_atoms=atoms_total,
    )
