"""Small OC20-format data made with ASE's EMT: Cu and Pt fcc(111) slabs with O, CO and H adsorbates.

Energies are EMT (a toy effective-medium potential), not DFT: the files test
readers and training pipelines, not physics. The layout is OC20's:

* per atom: ``tags`` 0 subsurface (held by a FixAtoms constraint), 1 surface,
  2 adsorbate;
* per frame: raw total energy (eV) and forces (eV/Å) in the stored
  calculator; ``sid`` (system id), ``fid`` (frame number along a short BFGS
  relaxation) and ``ref_energy`` (eV) in the row's ``data``, where
  ``ref_energy`` = E(clean slab) + E(adsorbate in vacuum), so that
  ``energy - ref_energy`` is an EMT adsorption energy;
* periodic in all three directions with vacuum along z, as OC20 slabs.

:func:`write_oc20_synthetic` writes an ASE db (``.aselmdb`` as OC20's LMDB
release, or ``.db`` / ``.json``); :func:`write_s2ef_extxyz` writes the same
frames as an S2EF ``.extxyz`` with its ``.txt`` frame log.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ADSORBATE_GEOMETRIES = {
    # symbols and positions (Å), first atom binds to the surface
    "O": ("O", [[0.0, 0.0, 0.0]]),
    "H": ("H", [[0.0, 0.0, 0.0]]),
    "CO": ("CO", [[0.0, 0.0, 0.0], [0.0, 0.0, 1.15]]),
}
SITES = ("fcc", "hcp", "ontop")
# Height (Å) of the binding atom above the top layer: (hollow site, on-top site).
HEIGHTS = {"O": (1.3, 1.8), "H": (1.0, 1.55), "CO": (1.4, 1.85)}


def oc20_synthetic_frames(
    num_systems: int = 4,
    frames_per_system: int = 3,
    metals=("Cu", "Pt"),
    adsorbates=("O", "CO", "H"),
    size=(2, 2, 3),
    surface_layers: int = 1,
    vacuum: float = 6.0,
    seed: int = 0,
) -> list:
    """EMT frames of slab + adsorbate systems, each an ``ase.Atoms`` with a SinglePointCalculator.

    System ``sid`` uses ``metals[sid % len(metals)]`` and
    ``adsorbates[(sid // len(metals)) % len(adsorbates)]`` on a site chosen by
    ``seed``; its frames are the rattled start and the following BFGS steps.

    Args:
        num_systems: number of systems (sid 0 .. num_systems - 1).
        frames_per_system: frames per system (fid 0 .. frames_per_system - 1).
        metals, adsorbates: choices (adsorbates from ``ADSORBATE_GEOMETRIES``).
        size: slab repetitions (a, b, layers).
        surface_layers: top layers tagged 1 and free; the rest are tagged 0 and fixed.
        vacuum: Å of vacuum on each side of the slab.
        seed: random seed of sites and rattling.
    Returns:
        list of ``ase.Atoms``; ``info`` has ``sid``, ``fid``, ``ref_energy``; forces are unconstrained.
    """
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.optimize import BFGS

    rng = np.random.default_rng(seed)
    frames = []
    for sid in range(num_systems):
        metal = metals[sid % len(metals)]
        adsorbate = adsorbates[(sid // len(metals)) % len(adsorbates)]
        atoms, ref_energy = _system(metal, adsorbate, SITES[rng.integers(len(SITES))], size, surface_layers, vacuum)
        atoms.positions[atoms.get_tags() > 0] += rng.normal(scale=0.05, size=(int((atoms.get_tags() > 0).sum()), 3))
        atoms.calc = EMT()
        optimizer = BFGS(atoms, logfile=None)
        for fid in range(frames_per_system):
            if fid:
                optimizer.step()
            frame = atoms.copy()
            frame.calc = SinglePointCalculator(
                frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces(apply_constraint=False)
            )
            frame.info.update(sid=sid, fid=fid, ref_energy=ref_energy)
            frames.append(frame)
    return frames


def write_oc20_synthetic(path, **options) -> list:
    """Write :func:`oc20_synthetic_frames` ``(**options)`` to an ASE db at ``path``.

    The type follows the suffix (``.aselmdb`` needs ``ase-db-backends`` and
    ``lmdb``); an existing file is replaced. ``sid``, ``fid`` and
    ``ref_energy`` go to each row's ``data``. Returns the frames written.
    """
    import ase.db

    from molsym.data.readers.asedb import db_type

    path = Path(path)
    kind = db_type(path)
    for stale in (path, path.with_name(path.name + "-lock")):  # LMDB keeps its lock beside the file
        if stale.exists():
            stale.unlink()
    frames = oc20_synthetic_frames(**options)
    db = ase.db.connect(str(path), type=kind, use_lock_file=False, append=False)
    if kind == "aselmdb":
        with db:  # one transaction; closes the environment on exit
            _write_rows(db, frames)
    else:
        _write_rows(db, frames)
    return frames


def write_s2ef_extxyz(frames, path, with_reference: bool = True) -> tuple[Path, Path]:
    """Write frames as an OC20 S2EF ``.extxyz`` (move_mask, tags, energy, forces) and its ``.txt`` log.

    Each log line reads ``random<sid>,frame<fid>,<ref_energy>`` (no third
    field when ``with_reference`` is False, as in OC20's test splits).
    Returns (extxyz path, log path).
    """
    import ase.io

    path = Path(path)
    log_path = path.with_suffix(".txt")
    clean = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = atoms.calc
        copy.info = {}
        clean.append(copy)
    ase.io.write(path, clean, format="extxyz")
    lines = []
    for atoms in frames:
        line = f"random{atoms.info['sid']},frame{atoms.info['fid']}"
        if with_reference:
            line += f",{atoms.info['ref_energy']!r}"
        lines.append(line)
    log_path.write_text("\n".join(lines) + "\n")
    return path, log_path


def _write_rows(db, frames) -> None:
    for atoms in frames:
        data = {key: atoms.info[key] for key in ("sid", "fid", "ref_energy")}
        stored = atoms.copy()
        stored.calc = atoms.calc
        stored.info = {}
        db.write(stored, data=data)


def _system(metal: str, adsorbate: str, site: str, size, surface_layers: int, vacuum: float):
    """(slab + adsorbate with OC20 tags and FixAtoms, reference energy in eV)."""
    from ase import Atoms
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.emt import EMT
    from ase.constraints import FixAtoms

    if adsorbate not in ADSORBATE_GEOMETRIES:
        raise ValueError(f"unknown adsorbate '{adsorbate}'; choose from {sorted(ADSORBATE_GEOMETRIES)}")
    slab = fcc111(metal, size=tuple(size), vacuum=vacuum)
    layer = slab.get_tags()  # ASE: 1 = top layer, counting down
    oc20_tags = np.where(layer <= surface_layers, 1, 0)
    slab.pbc = True
    slab.calc = EMT()
    slab_energy = slab.get_potential_energy()
    symbols, positions = ADSORBATE_GEOMETRIES[adsorbate]
    molecule = Atoms(symbols, positions=positions, cell=[12.0, 12.0, 12.0], pbc=False)
    molecule.calc = EMT()
    gas_energy = molecule.get_potential_energy()
    system = slab.copy()
    system.calc = None
    add_adsorbate(system, Atoms(symbols, positions=positions), height=HEIGHTS[adsorbate][site == "ontop"], position=site)
    system.info.pop("adsorbate_info", None)
    system.set_tags(np.concatenate([oc20_tags, np.full(len(system) - len(slab), 2)]))
    system.set_constraint(FixAtoms(indices=np.flatnonzero(oc20_tags == 0)))
    return system, float(slab_energy + gas_energy)
