"""Harmonic vibrations: mass-weighted Hessian with translations and rotations projected out.

For N atoms of masses m (amu) and a Hessian H = d^2E/dx^2 (3N, 3N) eV/Å², the mass-weighted
Hessian is D = M^-1/2 H M^-1/2 (eV/(Å² amu)). The rigid-body motions in mass-weighted
coordinates (Eckart conditions) are sqrt(m_a) e_k (three translations) and
sqrt(m_a) (e_k x (r_a - r_com)) (three rotations about the centre of mass); their span has
dimension 6 for a general molecule, 5 for a linear one, 3 for a single atom. D is diagonalised
in the orthogonal complement of that span, so exactly those modes are removed (not merely
shifted to zero). Periodic systems remove the three translations only (a crystal does not
rotate rigidly under periodic boundary conditions).

Eigenvalues lambda (eV/(Å² amu)) become energies hbar omega = hbar sqrt(lambda e / amu) 1e10
(eV) and wavenumbers (cm^-1); a negative lambda gives an imaginary frequency, reported as a
negative number. The zero-point energy is sum over real modes of hbar omega / 2 (eV).

Normal-mode conventions (``Vibrations``):
* ``modes``: (M, N, 3) orthonormal eigenvectors e of the projected D, in mass-weighted
  Cartesian coordinates (sum over atoms and axes of e^2 = 1, dimensionless);
* ``cartesian_modes``: (M, N, 3) the Cartesian displacements d = M^-1/2 e (amu^-1/2), the same
  convention as ``ase.vibrations.VibrationsData.get_modes``; ``cartesian_modes(normalized=True)``
  rescales each to unit Euclidean norm (Å per unit amplitude).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units

VIBRATION_METHODS = ("autograd", "head", "finite_difference")
# hbar sqrt(lambda) in eV for lambda in eV/(Å² amu)
_ENERGY_PER_ROOT_EIGENVALUE = units._hbar * 1e10 / np.sqrt(units._e * units._amu)
_RANK_TOLERANCE = 1e-6  # relative singular value below which a rigid-body vector counts as absent


@dataclass(frozen=True)
class Vibrations:
    """Result of :func:`vibrations`. M = 3N - removed modes, sorted by ascending eigenvalue.

    frequencies: (M,) cm^-1, imaginary ones negative. energies: (M,) complex, hbar omega in eV
    (imaginary for negative eigenvalues). eigenvalues: (M,) eV/(Å² amu) of the projected
    mass-weighted Hessian. modes: (M, N, 3) orthonormal mass-weighted eigenvectors.
    masses: (N,) amu. hessian: (3N, 3N) eV/Å², the (symmetrised) Hessian analysed.
    removed: number of rigid-body modes projected out (6, 5, 3, or 3 when periodic).
    """

    frequencies: np.ndarray
    energies: np.ndarray
    eigenvalues: np.ndarray
    modes: np.ndarray
    masses: np.ndarray
    hessian: np.ndarray
    removed: int

    @property
    def zero_point_energy(self) -> float:
        """sum over the real modes of hbar omega / 2, eV (imaginary modes contribute nothing)."""
        real = self.eigenvalues > 0
        return float(0.5 * np.sum(_ENERGY_PER_ROOT_EIGENVALUE * np.sqrt(self.eigenvalues[real])))

    def cartesian_modes(self, normalized: bool = False) -> np.ndarray:
        """(M, N, 3) Cartesian displacements M^-1/2 e (amu^-1/2; ASE's convention), or with
        ``normalized`` each scaled to unit norm."""
        d = self.modes / np.sqrt(self.masses)[None, :, None]
        if normalized:
            d = d / np.linalg.norm(d.reshape(len(d), -1), axis=1)[:, None, None]
        return d

    @property
    def imaginary_count(self) -> int:
        """Number of modes with a negative eigenvalue (imaginary frequency)."""
        return int(np.sum(self.eigenvalues < 0))


def rigid_body_basis(positions: np.ndarray, masses: np.ndarray, rotations: bool = True) -> np.ndarray:
    """Orthonormal basis (3N, r) of the rigid-body motions in mass-weighted coordinates.

    r = 3 translations, plus the independent rotations about the centre of mass when
    ``rotations`` (3, or 2 for a linear molecule, 0 for a single atom).
    """
    n = len(masses)
    sqrt_m = np.sqrt(masses)
    vectors = []
    for k in range(3):
        t = np.zeros((n, 3))
        t[:, k] = sqrt_m
        vectors.append(t.reshape(-1))
    if rotations:
        centred = positions - (masses[:, None] * positions).sum(0) / masses.sum()
        for k in range(3):
            axis = np.zeros(3)
            axis[k] = 1.0
            vectors.append((sqrt_m[:, None] * np.cross(axis, centred)).reshape(-1))
    matrix = np.stack(vectors, axis=1)
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    rank = int(np.sum(s > _RANK_TOLERANCE * s[0]))
    return u[:, :rank]


def vibrations_from_hessian(hessian: np.ndarray, atoms, *, project_rotations: bool | None = None,
                            masses: np.ndarray | None = None) -> Vibrations:
    """Frequencies and modes of ``hessian`` (3N, 3N) eV/Å² at the geometry of ``atoms``.

    ``project_rotations``: None (default): rotations are removed for non-periodic systems only;
    True on a periodic system raises ``ValueError``. ``masses``: (N,) amu, default the atoms'.
    """
    n = len(atoms)
    if n == 0:
        raise ValueError("vibrations need at least one atom, got an empty structure")
    hessian = np.asarray(hessian, dtype=np.float64)
    if hessian.shape != (3 * n, 3 * n):
        raise ValueError(f"hessian must be (3N, 3N) = {(3 * n, 3 * n)} for {n} atoms, got {hessian.shape}")
    if not np.all(np.isfinite(hessian)):
        raise ValueError("hessian has non-finite entries")
    periodic = bool(np.any(atoms.get_pbc()))
    if project_rotations is None:
        project_rotations = not periodic
    elif not isinstance(project_rotations, bool):
        raise ValueError(f"project_rotations must be None, True or False, got {project_rotations!r}")
    elif project_rotations and periodic:
        raise ValueError(f"rotations cannot be projected out of a periodic system (pbc={atoms.get_pbc().tolist()}): "
                         "only translations are rigid-body modes there; use project_rotations=None or False")
    masses = np.asarray(atoms.get_masses() if masses is None else masses, dtype=np.float64)
    if masses.shape != (n,) or not np.all(masses > 0):
        raise ValueError(f"masses must be {n} positive numbers (amu), got {masses}")
    hessian = 0.5 * (hessian + hessian.T)
    inv_sqrt = np.repeat(1.0 / np.sqrt(masses), 3)
    weighted = inv_sqrt[:, None] * hessian * inv_sqrt[None, :]
    rigid = rigid_body_basis(atoms.get_positions(), masses, rotations=project_rotations)
    # orthonormal basis of the complement of the rigid-body span
    full, _, _ = np.linalg.svd(rigid, full_matrices=True)
    internal = full[:, rigid.shape[1]:]
    eigenvalues, vectors = np.linalg.eigh(internal.T @ weighted @ internal)
    modes = (internal @ vectors).T.reshape(-1, n, 3)
    energies = _ENERGY_PER_ROOT_EIGENVALUE * np.sqrt(eigenvalues.astype(complex))
    frequencies = np.where(eigenvalues < 0, -np.abs(energies), np.abs(energies)) / units.invcm
    return Vibrations(frequencies=frequencies.real, energies=energies, eigenvalues=eigenvalues, modes=modes,
                      masses=masses, hessian=hessian, removed=rigid.shape[1])


def finite_difference_hessian(atoms, calc, delta: float = 0.01) -> np.ndarray:
    """(3N, 3N) eV/Å² by central differences of the forces of ``calc`` (any ASE calculator),
    displacing each coordinate by +-``delta`` Å (6N force calls), symmetrised. Error O(delta^2)."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0:
        raise ValueError(f"delta must be a positive number (Å), got {delta!r}")
    work = atoms.copy()
    work.calc = calc
    n = len(work)
    base = work.get_positions()
    hessian = np.empty((3 * n, 3 * n))
    for a in range(n):
        for k in range(3):
            forces = []
            for sign in (1.0, -1.0):
                shifted = base.copy()
                shifted[a, k] += sign * delta
                work.set_positions(shifted)
                forces.append(work.get_forces().reshape(-1))
            hessian[3 * a + k] = (forces[1] - forces[0]) / (2.0 * delta)  # dF/dx = -H
    return 0.5 * (hessian + hessian.T)


def vibrations(atoms, calc=None, method: str = "autograd", *, delta: float = 0.01,
               project_rotations: bool | None = None, masses: np.ndarray | None = None) -> Vibrations:
    """Harmonic vibrations of ``atoms`` on the surface of ``calc`` (default ``atoms.calc``).

    ``method``: "autograd" (the exact Hessian, ``calc.get_hessian(atoms, method="autograd")``),
    "head" (the model's Hessian head) or "finite_difference" (central differences of the forces,
    step ``delta`` Å; works with any ASE calculator). The first two need a calculator with
    ``get_hessian(atoms, method=...)``, as ``molsym.calculators.MolSymCalculator``.
    See :func:`vibrations_from_hessian` for ``project_rotations`` and ``masses``.
    """
    if method not in VIBRATION_METHODS:
        raise ValueError(f"method must be one of {list(VIBRATION_METHODS)}, got {method!r}")
    calc = atoms.calc if calc is None else calc
    if calc is None:
        raise ValueError("vibrations need a calculator: pass calc= or attach one to the atoms")
    if len(atoms) == 0:
        raise ValueError("vibrations need at least one atom, got an empty structure")
    if method == "finite_difference":
        hessian = finite_difference_hessian(atoms, calc, delta)
    else:
        if not callable(getattr(calc, "get_hessian", None)):
            raise ValueError(f"method {method!r} needs a calculator with get_hessian(atoms, method=...) "
                             f"(molsym.calculators.MolSymCalculator); {type(calc).__name__} has none: "
                             "use method='finite_difference'")
        hessian = calc.get_hessian(atoms, method=method)
    return vibrations_from_hessian(hessian, atoms, project_rotations=project_rotations, masses=masses)
