"""Per-element reference energies (E0): E_ref(structure) = sum over atoms of e[Z].

One type, :class:`LinearReference`, holds every such table: isolated-atom
energies (MACE's E0s, e.g. ``3bpa/iso_atoms.xyz``), OC20's linear references
(``oc20_linref.npz``: key ``coeff``, shape (100,), indexed by atomic number),
fairchem/UMA element-reference YAML files, or a least-squares fit over a data
set (:func:`molsym.data.readers.stats.fit_linear_reference`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np


@dataclass(frozen=True, eq=False)
class LinearReference:
    """Per-element energies e[Z] in eV, indexed by atomic number; NaN marks an unknown element.

    Attributes:
        energies: (Zmax + 1,) float64, eV per atom; entry 0 is unused.
    """

    energies: np.ndarray

    def __post_init__(self):
        energies = np.asarray(self.energies, dtype=np.float64).reshape(-1)
        energies.setflags(write=False)
        object.__setattr__(self, "energies", energies)

    def energy(self, numbers, where: str = "structure") -> np.ndarray:
        """(1,) eV: the sum of e[Z] over ``numbers`` ((n,) atomic numbers)."""
        numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        if numbers.size and numbers.max() >= len(self.energies):
            raise ValueError(f"{where}: no reference energy for element Z={int(numbers.max())} "
                              f"(the table stops at Z={len(self.energies) - 1})")
        values = self.energies[numbers]
        unknown = sorted(set(numbers[np.isnan(values)].tolist()))
        if unknown:
            raise ValueError(f"{where}: no reference energy for elements Z={unknown}")
        return np.array([values.sum()])

    def as_dict(self) -> dict[int, float]:
        """{Z: e[Z]} for every known element (Z >= 1)."""
        return {z: float(e) for z, e in enumerate(self.energies) if z > 0 and not np.isnan(e)}

    @classmethod
    def from_dict(cls, mapping: Mapping) -> "LinearReference":
        """From {Z or chemical symbol: eV}."""
        from ase.data import atomic_numbers

        by_z = {}
        for key, value in mapping.items():
            z = atomic_numbers[key] if isinstance(key, str) and not key.isdigit() else int(key)
            by_z[z] = float(value)
        energies = np.full(max(by_z, default=0) + 1, np.nan)
        for z, value in by_z.items():
            energies[z] = value
        return cls(energies)

    @classmethod
    def load(cls, path, key: str | None = None) -> "LinearReference":
        """Read a table from ``.npz`` (array ``key``, default ``coeff`` or the only array),
        ``.yaml``/``.yml`` or ``.json`` (``key`` selects an entry such as
        ``oc20_elem_refs``; a list is indexed by Z, a mapping by Z or symbol).
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                name = key or ("coeff" if "coeff" in names else (names[0] if len(names) == 1 else None))
                if name not in names:
                    raise ValueError(f"{path}: choose the array with key=..., one of {names}")
                return cls(np.asarray(archive[name], dtype=np.float64))
        if suffix in (".yaml", ".yml", ".json"):
            if suffix == ".json":
                content = json.loads(path.read_text())
            else:
                import yaml

                content = yaml.safe_load(path.read_text())
            if key is not None:
                if not isinstance(content, Mapping) or key not in content:
                    found = list(content) if isinstance(content, Mapping) else type(content).__name__
                    raise ValueError(f"{path}: no entry '{key}' (found {found})")
                content = content[key]
            if isinstance(content, Mapping):
                return cls.from_dict(content)
            if isinstance(content, list):
                return cls(np.asarray(content, dtype=np.float64))
            raise ValueError(f"{path}: expected a list indexed by Z or a mapping element -> eV; pass key=...")
        raise ValueError(f"{path}: unknown reference table format '{suffix}' (use .npz, .yaml or .json)")


def element_counts(numbers_list: Iterable, num_elements: int = 119) -> np.ndarray:
    """(S, num_elements) int64: how many atoms of each Z in each structure."""
    return np.stack([np.bincount(np.asarray(n, dtype=np.int64), minlength=num_elements) for n in numbers_list])
