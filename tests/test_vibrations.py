"""Harmonic vibrations (molsym.analysis.vibrations): analytic spring networks, ASE's finite
differences, the rigid-body projection (6 / 5 / 3 modes, translations only when periodic), refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.vibrations import Vibrations as AseVibrations

from conftest import make_model
from molsym.analysis import vibrations, vibrations_from_hessian
from molsym.calculators import MolSymCalculator

OMEGA = units._hbar * 1e10 / np.sqrt(units._e * units._amu) / units.invcm  # cm^-1 per sqrt(eV/(Å² amu))


class Springs:
    """Central harmonic springs E = sum k/2 (|r_ij| - r0)^2 with the analytic Hessian.

    bonds: (i, j, image) with r_ij = x_j + image @ cell - x_i; the pair block is
    k [u u^T + (1 - r0/r)(Id - u u^T)]."""

    def __init__(self, bonds, k: float, r0: float):
        self.bonds, self.k, self.r0 = bonds, k, r0

    def get_hessian(self, atoms, method="autograd"):
        n = len(atoms)
        x, cell = atoms.get_positions(), np.asarray(atoms.get_cell())
        hessian = np.zeros((3 * n, 3 * n))
        for i, j, image in self.bonds:
            r = x[j] + np.asarray(image) @ cell - x[i]
            length = np.linalg.norm(r)
            u = r / length
            block = self.k * (np.outer(u, u) + (1 - self.r0 / length) * (np.eye(3) - np.outer(u, u)))
            for a, b, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                hessian[3 * a:3 * a + 3, 3 * b:3 * b + 3] += sign * block
        return hessian


def _assert_spectrum(result, eigenvalues):
    """Eigenvalues to 1e-12 of the largest; frequencies of the non-zero modes to 1e-10 relative (a zero
    mode's frequency is sqrt(rounding), ~1e-6 cm^-1, so zero modes are checked on the eigenvalue)."""
    assert np.max(np.abs(result.eigenvalues - eigenvalues)) < 1e-12 * eigenvalues.max()
    nonzero = eigenvalues > 1e-6 * eigenvalues.max()
    expected = OMEGA * np.sqrt(eigenvalues[nonzero])
    assert np.max(np.abs(result.frequencies[nonzero] - expected) / expected) < 1e-10


def test_diatomic_spring_is_analytic():
    k, r0 = 7.3, 1.2
    atoms = Atoms("CO", positions=[[0.1, 0.2, 0.3], [0.1 + r0 / np.sqrt(2), 0.2 + r0 / np.sqrt(2), 0.3]])
    result = vibrations(atoms, Springs([(0, 1, (0, 0, 0))], k, r0))
    m = atoms.get_masses()
    assert result.removed == 5 and result.frequencies.shape == (1,)
    expected = OMEGA * np.sqrt(k * (1 / m[0] + 1 / m[1]))
    assert abs(result.frequencies[0] - expected) < 1e-10 * expected
    assert abs(result.zero_point_energy - 0.5 * expected * units.invcm) < 1e-12


def test_linear_triatomic_spring_is_analytic():
    k, r0 = 10.0, 1.16
    atoms = Atoms("OCO", positions=[[-r0, 0, 0], [0, 0, 0], [r0, 0, 0]])
    result = vibrations(atoms, Springs([(0, 1, (0, 0, 0)), (1, 2, (0, 0, 0))], k, r0))
    m_o, m_c = atoms.get_masses()[:2]
    assert result.removed == 5
    # two bends (no stiffness with central springs), symmetric and asymmetric stretch
    eigenvalues = np.array([0.0, 0.0, k / m_o, k / m_o * (1 + 2 * m_o / m_c)])
    _assert_spectrum(result, eigenvalues)


def test_triangle_spring_is_analytic_and_modes_are_orthonormal():
    k, r0 = 4.0, 1.5
    positions = r0 / np.sqrt(3) * np.array([[np.cos(t), np.sin(t), 0.0] for t in (0, 2 * np.pi / 3, 4 * np.pi / 3)])
    atoms = Atoms("CCC", positions=positions + [0.3, -0.2, 1.0])
    atoms.rotate(37, (1, 2, 3))
    result = vibrations(atoms, Springs([(0, 1, (0, 0, 0)), (1, 2, (0, 0, 0)), (2, 0, (0, 0, 0))], k, r0))
    m = atoms.get_masses()[0]
    assert result.removed == 6
    expected = OMEGA * np.sqrt([1.5 * k / m, 1.5 * k / m, 3 * k / m])  # E' (twice), A1'
    assert np.max(np.abs(result.frequencies - expected)) < 1e-10 * expected.max()
    flat = result.modes.reshape(3, -1)
    assert np.allclose(flat @ flat.T, np.eye(3), atol=1e-12)
    cartesian = result.cartesian_modes()
    assert np.allclose(cartesian * np.sqrt(m), result.modes, atol=1e-14)
    unit = result.cartesian_modes(normalized=True).reshape(3, -1)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0)
    zpe = 0.5 * np.sum(expected) * units.invcm
    assert abs(result.zero_point_energy - zpe) < 1e-12


def test_periodic_chain_removes_translations_only():
    k, a, n = 3.0, 1.1, 8
    atoms = Atoms("C" * n, positions=[[a * i, 0.0, 0.0] for i in range(n)], cell=[n * a, 6.0, 6.0], pbc=True)
    bonds = [(i, (i + 1) % n, (1 if i == n - 1 else 0, 0, 0)) for i in range(n)]
    result = vibrations(atoms, Springs(bonds, k, a))
    m = atoms.get_masses()[0]
    assert result.removed == 3 and len(result.frequencies) == 3 * n - 3
    longitudinal = 2 * np.sqrt(k / m) * np.abs(np.sin(np.pi * np.arange(1, n) / n))
    _assert_spectrum(result, np.sort(np.concatenate([np.zeros(2 * n - 2), longitudinal ** 2])))
    with pytest.raises(ValueError, match="periodic"):
        vibrations(atoms, Springs(bonds, k, a), project_rotations=True)


@pytest.fixture(scope="module")
def calc():
    return MolSymCalculator(make_model("tensornet", heads={"hessian": {"cutoff": 4.0}}), dtype="float64")


def _ase_hessian(atoms, calc, delta, tmp_path):
    work = atoms.copy()
    work.calc = calc
    vib = AseVibrations(work, delta=delta, nfree=2, name=str(tmp_path / f"vib{delta}"))
    vib.run()
    return vib.get_vibrations().get_hessian_2d()


def test_matches_ase_finite_differences_with_error_of_order_delta_squared(calc, tmp_path):
    atoms = molecule("CH3CH2OH")
    exact = vibrations(atoms, calc, method="autograd")
    assert exact.removed == 6 and len(exact.frequencies) == 21
    errors = {}
    for delta in (0.01, 0.005):
        ase_hessian = _ase_hessian(atoms, calc, delta, tmp_path)
        ours_fd = vibrations(atoms, calc, method="finite_difference", delta=delta)
        # the same central differences as ASE's: equal up to rounding
        assert np.max(np.abs(ours_fd.hessian - ase_hessian)) < 1e-9
        ase = vibrations_from_hessian(ase_hessian, atoms)
        errors[delta] = np.max(np.abs(exact.frequencies - ase.frequencies))
    # central differences: error ~ delta^2, so halving delta divides it by ~4
    ratio = errors[0.01] / errors[0.005]
    assert 3.5 < ratio < 4.5, (errors, ratio)
    assert errors[0.005] < 1.0  # cm^-1, on frequencies up to a few thousand


def test_head_method_and_linear_and_single_atom(calc):
    co2 = molecule("CO2")
    exact = vibrations(co2, calc, method="autograd")
    head = vibrations(co2, calc, method="head")
    assert exact.removed == head.removed == 5 and len(exact.frequencies) == 4
    assert np.allclose(head.hessian, calc.get_hessian(co2, method="head"))
    atom = Atoms("O", positions=[[0.3, 0.1, -0.2]])
    single = vibrations(atom, calc)
    assert single.removed == 3 and single.frequencies.shape == (0,) and single.zero_point_energy == 0.0


def test_projected_rigid_motions_have_no_component_in_the_modes(calc):
    atoms = molecule("H2O")
    atoms.rattle(0.05, seed=1)  # not a stationary point: the rotations still come out exactly
    result = vibrations(atoms, calc)
    m = np.sqrt(np.repeat(atoms.get_masses(), 3))
    centred = atoms.get_positions() - atoms.get_center_of_mass()
    for axis in np.eye(3):
        translation = (m * np.tile(axis, 3))
        rotation = m * np.cross(axis, centred).reshape(-1)
        assert np.max(np.abs(result.modes.reshape(3, -1) @ translation)) < 1e-12
        assert np.max(np.abs(result.modes.reshape(3, -1) @ rotation)) < 1e-12


def test_bad_input_is_refused(calc):
    atoms = molecule("H2O")
    with pytest.raises(ValueError, match="method"):
        vibrations(atoms, calc, method="numerical")
    with pytest.raises(ValueError, match="delta"):
        vibrations(atoms, calc, method="finite_difference", delta=-0.01)
    with pytest.raises(ValueError, match="calculator"):
        vibrations(atoms)
    with pytest.raises(ValueError, match="get_hessian"):
        vibrations(atoms, object(), method="autograd")
    with pytest.raises(ValueError, match="at least one atom"):
        vibrations(Atoms(), calc)
    with pytest.raises(ValueError, match=r"\(3N, 3N\)"):
        vibrations_from_hessian(np.zeros((6, 6)), atoms)
    with pytest.raises(ValueError, match="non-finite"):
        vibrations_from_hessian(np.full((9, 9), np.nan), atoms)
    with pytest.raises(ValueError, match="masses"):
        vibrations_from_hessian(np.zeros((9, 9)), atoms, masses=np.array([1.0, -1.0, 1.0]))
    periodic = atoms.copy()
    periodic.set_cell([8.0, 8.0, 8.0])
    periodic.pbc = True
    with pytest.raises(ValueError, match="periodic"):
        vibrations(periodic, calc, project_rotations=True)
    assert vibrations(periodic, calc).removed == 3
    no_head = MolSymCalculator(make_model("tensornet"), dtype="float64")
    with pytest.raises(ValueError, match="head"):
        vibrations(atoms, no_head, method="head")
