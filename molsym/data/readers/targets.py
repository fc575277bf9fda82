"""Targets (labels) of one structure: where to find them, their shapes and their checks.

A :class:`TargetSpec` names where each target is stored; :func:`read_targets`
looks each name up in an ordered list of sources (for an ``ase.Atoms``: the
stored calculator results, then ``atoms.info``, then ``atoms.arrays``; for an
ASE db row: the row's calculator results, ``key_value_pairs``, then ``data``)
and returns arrays in molsym's shapes and units:

===========  =============  ===========================================
key          shape          unit / meaning
===========  =============  ===========================================
energy       (1,)           eV, total energy (minus references if asked)
forces       (n, 3)         eV/Å
stress       (1, 3, 3)      eV/Å³, ASE sign convention (positive = tensile)
hessian      (3n, 3n)       eV/Å², d²E / dx_a dx_b, rows atom-major (x, y, z)
fixed        (n,)           bool, atom held fixed (FixAtoms, OC20 move_mask = 0)
tags         (n,)           int64, OC20 tags: 0 subsurface, 1 surface, 2 adsorbate
===========  =============  ===========================================

Forces are read as stored, i.e. with ``get_forces(apply_constraint=False)``
semantics: fixed atoms keep their computed forces, and losses mask them with
``fixed`` where wanted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from molsym.data import keys as K
from molsym.data.readers.references import LinearReference

# Any stress component above this (eV/Å³, about 1600 GPa) almost surely means other units (GPa, kbar).
_MAX_PLAUSIBLE_STRESS = 10.0
# Relative asymmetry of a Hessian above which its layout is taken to be wrong.
_HESSIAN_SYMMETRY_TOL = 1e-3

FLOAT_TARGETS = (K.ENERGY, K.FORCES, K.STRESS, K.HESSIAN)


class TargetError(ValueError):
    """A target is missing, malformed or implausible; the message names the file, frame and key."""


@dataclass(frozen=True)
class TargetSpec:
    """Which targets to read and under which names.

    Attributes:
        energy, forces, stress, hessian: key names to look up in the sources
            (calculator results first, then info / key_value_pairs, then
            arrays / data); ``None`` skips that target. Defaults are ASE's own
            names, so files that keep labels in a SinglePointCalculator need
            nothing; e.g. ``energy="REF_energy", forces="REF_forces"`` reads
            MACE-style labels from info/arrays.
        virial: optional key of a virial W (3x3, 9 or Voigt 6; eV) used when no
            stress is found: stress = -W / volume.
        required: target names (``"energy"``, ``"forces"``, ...) whose absence
            is an error rather than a silently missing key.
        tags: add ``tags`` (n,) (zeros for structures without tags).
        fixed: add ``fixed`` (n,) (all False for structures without FixAtoms).
        reference_key: if set, a per-structure reference energy stored under
            this name (e.g. OC20's ``"ref_energy"``) is subtracted from the
            energy; its absence is an error.
        linear_reference: if set, a :class:`~molsym.data.readers.references.LinearReference`
            whose per-element energies (summed over the atoms) are subtracted.
    """

    energy: str | None = "energy"
    forces: str | None = "forces"
    stress: str | None = "stress"
    hessian: str | None = "hessian"
    virial: str | None = None
    required: tuple[str, ...] = ()
    tags: bool = False
    fixed: bool = False
    reference_key: str | None = None
    linear_reference: LinearReference | None = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "required", tuple(self.required))
        unknown = [name for name in self.required if name not in FLOAT_TARGETS]
        if unknown:
            raise ValueError(f"TargetSpec.required: unknown targets {unknown}; choose from {list(FLOAT_TARGETS)}")
        for name in self.required:
            if getattr(self, name) is None:
                raise ValueError(f"TargetSpec: '{name}' is required but its key is None")

    @classmethod
    def oc20(cls, **overrides) -> "TargetSpec":
        """OC20 defaults: energy and forces, with tags and fixed atoms."""
        return cls(**{"stress": None, "hessian": None, "tags": True, "fixed": True, **overrides})


def read_targets(
    sources: Sequence[Mapping],
    numbers: np.ndarray,
    cell: np.ndarray,
    spec: TargetSpec,
    where: str,
) -> dict[str, np.ndarray]:
    """Look up every target of ``spec`` in ``sources`` and convert it to molsym's shape.

    Args:
        sources: mappings searched in order for each key name (first hit wins).
        numbers: (n,) atomic numbers of the structure.
        cell: (3, 3) Å, used only to turn a virial into a stress.
        spec: what to read.
        where: "file, frame i" text put in front of every error message.
    Returns:
        dict from molsym target keys to float64 arrays of the shapes in the
        module docstring; absent targets are left out. ``fixed`` and ``tags``
        are not read here (see :func:`fixed_mask` and :func:`tags_of`).
    Raises:
        TargetError: on a missing required target, a wrong shape or a non-finite value.
    """
    n = len(numbers)
    out: dict[str, np.ndarray] = {}
    converters = {K.ENERGY: _as_energy, K.FORCES: _as_forces, K.STRESS: _as_stress, K.HESSIAN: _as_hessian}
    for target, convert in converters.items():
        name = getattr(spec, target)
        if name is None:
            continue
        value = _lookup(sources, name)
        if value is None and target == K.STRESS and spec.virial is not None:
            virial = _lookup(sources, spec.virial)
            if virial is not None:
                out[target] = _stress_from_virial(virial, cell, where, spec.virial)
                continue
        if value is None:
            if target in spec.required:
                raise TargetError(f"{where}: required {target} not found under key '{name}'")
            continue
        out[target] = convert(value, n, where, name)
    if spec.reference_key is not None or spec.linear_reference is not None:
        _subtract_references(out, sources, numbers, spec, where)
    return out


def fixed_mask(atoms, where: str) -> np.ndarray:
    """(n,) bool: atoms fixed by FixAtoms (or FixCartesian on all three axes) or by a ``move_mask`` array.

    Partial constraints (FixCartesian on some axes, FixedLine, FixedPlane, ...)
    leave an atom free here.

    ``move_mask`` (OC20 extxyz column, True = free) is honoured when it is still
    an array; recent ASE turns it into a FixAtoms constraint while reading.
    """
    from ase.constraints import FixAtoms, FixCartesian

    n = len(atoms)
    fixed = np.zeros(n, dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed[np.asarray(constraint.get_indices(), dtype=np.int64)] = True
        elif isinstance(constraint, FixCartesian) and np.asarray(constraint.mask, dtype=bool).all():
            fixed[np.asarray(constraint.get_indices(), dtype=np.int64)] = True
    if "move_mask" in atoms.arrays:
        move_mask = np.asarray(atoms.arrays["move_mask"])
        if move_mask.shape[0] != n:
            raise TargetError(f"{where}: move_mask has {move_mask.shape[0]} entries for {n} atoms")
        fixed |= ~move_mask.reshape(n, -1).astype(bool).all(axis=1)
    return fixed


def tags_of(atoms, where: str) -> np.ndarray:
    """(n,) int64 tags, as stored (zeros when the structure has none).

    OC20 uses 0 subsurface, 1 surface, 2 adsorbate; other sources differ
    (fairchem's test json: 1 adsorbate, 0 slab; ASE's slab builders: layer
    numbers), so values are not checked here.
    """
    tags = np.asarray(atoms.get_tags(), dtype=np.int64).reshape(-1)
    if tags.shape[0] != len(atoms):
        raise TargetError(f"{where}: {tags.shape[0]} tags for {len(atoms)} atoms")
    return tags


def _lookup(sources: Sequence[Mapping], name: str):
    for source in sources:
        if source is not None and name in source and source[name] is not None:
            return source[name]
    return None


def _numeric(value, where: str, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TargetError(f"{where}: '{name}' is not numeric ({type(value).__name__}): {error}") from None
    if not np.all(np.isfinite(array)):
        raise TargetError(f"{where}: '{name}' contains NaN or inf")
    return array


def _as_energy(value, n: int, where: str, name: str) -> np.ndarray:
    array = _numeric(value, where, name)
    if array.size != 1:
        raise TargetError(f"{where}: energy '{name}' must be one number (eV), got shape {array.shape}")
    return array.reshape(1)


def _as_forces(value, n: int, where: str, name: str) -> np.ndarray:
    array = _numeric(value, where, name)
    if array.shape != (n, 3):
        raise TargetError(f"{where}: forces '{name}' must have shape ({n}, 3) (eV/Å), got {array.shape}")
    return array


def _as_3x3(value, where: str, name: str, what: str) -> np.ndarray:
    """Voigt 6 (xx, yy, zz, yz, xz, xy), 9 row-major or 3x3 -> (3, 3)."""
    array = _numeric(value, where, name)
    if array.shape == (3, 3) or array.shape == (9,):
        return array.reshape(3, 3)
    if array.shape == (6,):
        xx, yy, zz, yz, xz, xy = array
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise TargetError(f"{where}: {what} '{name}' must be Voigt 6, 9 or 3x3 values, got shape {array.shape}")


def _as_stress(value, n: int, where: str, name: str) -> np.ndarray:
    stress = _as_3x3(value, where, name, "stress")
    largest = np.abs(stress).max()
    if largest > _MAX_PLAUSIBLE_STRESS:
        raise TargetError(
            f"{where}: stress '{name}' has a component of {largest:.4g}, implausible in eV/Å³ "
            f"(1 eV/Å³ = 160.2 GPa); convert GPa or kbar to eV/Å³ first"
        )
    return stress.reshape(1, 3, 3)


def _stress_from_virial(value, cell: np.ndarray, where: str, name: str) -> np.ndarray:
    virial = _as_3x3(value, where, name, "virial")
    volume = abs(np.linalg.det(np.asarray(cell, dtype=np.float64)))
    if volume < 1e-8:
        raise TargetError(f"{where}: virial '{name}' given but the cell has no volume, so no stress can be formed")
    return _as_stress(-virial / volume, 0, where, f"-{name}/volume")


def _as_hessian(value, n: int, where: str, name: str) -> np.ndarray:
    """(3n, 3n), (9n²,), (n, 3, n, 3) or (n, 9n) (per-atom rows, row-major) -> (3n, 3n)."""
    array = _numeric(value, where, name)
    size = 3 * n
    if array.size != size * size or array.shape not in {(size, size), (size * size,), (n, 3, n, 3), (n, 3 * size)}:
        raise TargetError(
            f"{where}: hessian '{name}' must hold (3n)^2 = {size * size} values as (3n, 3n), (9n^2,), "
            f"(n, 3, n, 3) or (n, 9n) (eV/Å²), got shape {array.shape}"
        )
    hessian = array.reshape(size, size)
    scale = max(np.abs(hessian).max(), 1e-12)
    asymmetry = np.abs(hessian - hessian.T).max() / scale
    if asymmetry > _HESSIAN_SYMMETRY_TOL:
        raise TargetError(
            f"{where}: hessian '{name}' is not symmetric (max |H - H^T| / max |H| = {asymmetry:.3g}); "
            f"check its layout (rows must be atom-major x, y, z)"
        )
    return hessian


def _subtract_references(out, sources, numbers, spec: TargetSpec, where: str) -> None:
    if K.ENERGY not in out:
        return
    if spec.reference_key is not None:
        reference = _lookup(sources, spec.reference_key)
        if reference is None:
            raise TargetError(f"{where}: reference energy '{spec.reference_key}' not found, cannot subtract it")
        out[K.ENERGY] = out[K.ENERGY] - _as_energy(reference, 0, where, spec.reference_key)
    if spec.linear_reference is not None:
        try:
            out[K.ENERGY] = out[K.ENERGY] - spec.linear_reference.energy(numbers, where)
        except ValueError as error:
            raise TargetError(str(error)) from None


def isolated_atom_reference(frames, energy_key: str = "energy") -> LinearReference:
    """E0 from single-atom structures (an extxyz path or ``ase.Atoms`` list), e.g. ``3bpa/iso_atoms.xyz``.

    Each frame holds one atom and its energy (eV), read like any target (stored calculator
    first, then ``info[energy_key]``).
    """
    name = str(frames) if isinstance(frames, (str, Path)) else "isolated atoms"
    if isinstance(frames, (str, Path)):
        import ase.io

        frames = ase.io.read(frames, index=":")
    spec = TargetSpec(energy=energy_key, forces=None, stress=None, hessian=None, required=("energy",))
    table = {}
    for index, atoms in enumerate(frames):
        where = f"{name}, frame {index}"
        if len(atoms) != 1:
            raise ValueError(f"{where}: an isolated-atom frame must hold one atom, got {len(atoms)}")
        results = atoms.calc.results if atoms.calc is not None else {}
        target = read_targets([results, atoms.info], atoms.numbers, atoms.cell.array, spec, where)
        z = int(atoms.numbers[0])
        if z in table:
            raise ValueError(f"{where}: element Z={z} appears twice")
        table[z] = float(target["energy"][0])
    return LinearReference.from_dict(table)
