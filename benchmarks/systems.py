"""Benchmark systems, built deterministically.

- ``bpa_molecule()``: the 27-atom 3BPA molecule (first frame of 3BPA train_300K.xyz).
- ``water_box()``: 64 H2O (192 atoms) in a periodic cubic box at 1.0 g/cm^3,
  molecules on a jittered 4x4x4 lattice with random orientations (fixed seed).
- ``bpa_frames(n)``: the first ``n`` frames of 3BPA train_300K.xyz (a batch of molecules).

The data folder is ``$MOLSYM_DATA`` or ``../shared/data`` next to the repository
(``/work/shared/data`` on the project's machines).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

_AVOGADRO = 6.02214076e23
_WATER_MASS = 18.01528  # g/mol


def data_dir() -> Path:
    """Folder of the reference data (see module docstring)."""
    env = os.environ.get("MOLSYM_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "shared" / "data", here / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("reference data not found: set MOLSYM_DATA to the folder holding 3bpa/")


def bpa_frames(n: int) -> list[Atoms]:
    """First ``n`` configurations of 3BPA train_300K.xyz (27 atoms each, no PBC)."""
    frames = read(data_dir() / "3bpa" / "train_300K.xyz", index=f":{n}")
    for atoms in frames:
        atoms.calc = None
        atoms.pbc = False
        atoms.cell = np.zeros((3, 3))
    return frames


def bpa_molecule() -> Atoms:
    """The 27-atom 3BPA molecule (first frame of train_300K.xyz), in vacuum."""
    return bpa_frames(1)[0]


def water_box(molecules_per_side: int = 4, density: float = 1.0, seed: int = 0) -> Atoms:
    """Cubic periodic box of ``molecules_per_side**3`` H2O at ``density`` g/cm^3.

    Oxygens sit on a simple cubic lattice jittered by up to 0.15 Å; each
    molecule (O-H 0.9572 Å, H-O-H 104.52 deg) gets a uniformly random rotation.
    The same arguments always give the same coordinates.
    """
    count = molecules_per_side ** 3
    volume = count * _WATER_MASS / _AVOGADRO / density * 1e24  # Å^3
    side = volume ** (1.0 / 3.0)
    spacing = side / molecules_per_side
    rng = np.random.default_rng(seed)
    half = np.radians(104.52) / 2.0
    r_oh = 0.9572
    local = np.array([
        [0.0, 0.0, 0.0],
        [r_oh * np.sin(half), r_oh * np.cos(half), 0.0],
        [-r_oh * np.sin(half), r_oh * np.cos(half), 0.0],
    ])
    positions = []
    grid = np.arange(molecules_per_side) * spacing + spacing / 2.0
    for x in grid:
        for y in grid:
            for z in grid:
                q = rng.normal(size=4)
                q /= np.linalg.norm(q)
                rotation = _quaternion_to_matrix(q)
                centre = np.array([x, y, z]) + rng.uniform(-0.15, 0.15, size=3)
                positions.extend(centre + local @ rotation.T)
    numbers = [8, 1, 1] * count
    return Atoms(numbers=numbers, positions=np.array(positions), cell=np.eye(3) * side, pbc=True)


def _quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
