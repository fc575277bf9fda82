"""Reader of HORM Hessian data as flat numpy arrays (``sample_100_DERIVED.npz`` in ../shared/data).

HORM (Transition1x geometries, wB97X/6-31G(d)) is licensed CC BY-NC-SA 4.0: read it from where it
lies; never copy it into a repository. The .npz holds, for M molecules of n_m atoms:

    natoms (M,), atom_offsets (M+1,), Z (sum n,), pos (sum n, 3) Å, forces (sum n, 3) eV/Å,
    energy (M,) eV (total), ae (M,) eV (energy minus fitted per-element references),
    rxn (M,) reaction index, hessian (sum (3 n_m)^2,) eV/Å² row-major (3n, 3n), hessian_offsets (M+1,)

(all stored as float32). Each molecule becomes a :class:`Sample` (no cell, no PBC) whose targets
pass the same checks as every reader's (shapes, a symmetric Hessian).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from molsym.data.readers.sample import Sample, sample_from_atoms
from molsym.data.readers.targets import TargetSpec

HORM_KEYS = ("natoms", "atom_offsets", "Z", "pos", "forces", "energy", "ae", "rxn", "hessian", "hessian_offsets")


def read_horm_npz(path, indices=None, *, energy: str = "energy", spec: TargetSpec | None = None) -> list[Sample]:
    """The molecules of a HORM .npz (all, or those at ``indices``) as :class:`Sample` s.

    ``energy``: "energy" (total, eV) or "ae" (minus the per-element references, eV).
    ``spec``: which targets to keep (default: energy, forces and hessian, all required).
    ``meta`` holds ``source``, ``index`` (molecule position in the file) and ``rxn``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if energy not in ("energy", "ae"):
        raise ValueError(f"energy must be 'energy' or 'ae', got {energy!r}")
    with np.load(path) as data:
        missing = [k for k in HORM_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path}: not a HORM array file (missing {missing}; has {sorted(data.files)})")
        arrays = {k: data[k] for k in HORM_KEYS}
    count = len(arrays["natoms"])
    indices = range(count) if indices is None else [int(i) for i in indices]
    spec = spec or TargetSpec(stress=None, required=("energy", "forces", "hessian"))
    samples = []
    for index in indices:
        if not 0 <= index < count:
            raise IndexError(f"{path}: molecule {index} out of range (the file holds {count})")
        atoms_slice = slice(arrays["atom_offsets"][index], arrays["atom_offsets"][index + 1])
        hessian_slice = slice(arrays["hessian_offsets"][index], arrays["hessian_offsets"][index + 1])
        atoms = Atoms(numbers=arrays["Z"][atoms_slice], positions=arrays["pos"][atoms_slice].astype(np.float64))
        labels = {"energy": float(arrays[energy][index]),
                  "forces": arrays["forces"][atoms_slice].astype(np.float64),
                  "hessian": arrays["hessian"][hessian_slice].astype(np.float64)}
        meta = {"source": str(path), "index": index, "rxn": int(arrays["rxn"][index])}
        samples.append(sample_from_atoms(atoms, spec, f"{path}, molecule {index}", extra_sources=(labels,), meta=meta))
    return samples
