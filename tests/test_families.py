"""Every family and mixed stack of the registry (conftest.MODEL_CONFIGS) through every path.

The physics (equivariance, finite differences, cutoff smoothness, batching) is in
test_physics.py; here the same models go through the ASE calculator (float64 and float32,
stress, Hessian), ``predict``, a checkpoint round trip, the compiled path and NVE dynamics.
Tolerances: float64 paths that evaluate the same operations agree to rounding (1e-10 on
energies of O(10^4) eV with E0, 1e-10 eV/Å on forces); float32 carries ~7 digits
(forces of O(1) eV/Å to 1e-4 eV/Å).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.verlet import VelocityVerlet

import molsym
from molsym.calculators import MolSymCalculator
from molsym.data import keys as K
from molsym.models.derivatives import energy_forces_stress, hessian
from conftest import bpa_frames, make_model, periodic_copper
from test_md import thermalize_momenta


def _graph(atoms, model, dtype=torch.float64):
    return molsym.from_ase(atoms, model.cutoff, dtype)


def test_calculator_float64_equals_the_model(family_name):
    model = make_model(family_name)
    atoms = bpa_frames(1)[0]
    atoms.calc = MolSymCalculator(model, dtype="float64")
    reference = energy_forces_stress(model, _graph(atoms, model))
    assert abs(atoms.get_potential_energy() - float(reference[K.ENERGY].detach())) < 1e-10
    np.testing.assert_allclose(atoms.get_forces(), reference[K.FORCES].detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), rtol=1e-12)


def test_calculator_float32_agrees_with_float64(family_name):
    model = make_model(family_name)
    atoms = bpa_frames(1)[0]
    f64 = MolSymCalculator(model, dtype="float64")
    f32 = MolSymCalculator(model, dtype="float32")
    assert all(p.dtype == torch.float32 for p in f32.model.parameters())
    forces64, forces32 = f64.get_forces(atoms), f32.get_forces(atoms)
    # energies include E0 sums of ~2e4 eV: float32 resolves them to ~2e-3 eV
    assert abs(f32.get_potential_energy(atoms) - f64.get_potential_energy(atoms)) < 1e-7 * 2e4
    np.testing.assert_allclose(forces32, forces64, rtol=0, atol=1e-4 * max(1.0, np.abs(forces64).max()))


def test_calculator_stress_and_hessian(family_name):
    model = make_model(family_name)
    crystal = periodic_copper(repeat=1, shear=0.1)
    calc = MolSymCalculator(model, dtype="float64")
    reference = energy_forces_stress(model, _graph(crystal, model), stress=True)[K.STRESS][0].detach().numpy()
    voigt = reference.flat[[0, 4, 8, 5, 2, 1]]
    np.testing.assert_allclose(calc.get_stress(crystal), voigt, rtol=0, atol=1e-12)
    water = molecule("H2O")
    matrix = calc.get_hessian(water)
    assert matrix.shape == (9, 9)
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-10 * np.abs(matrix).max())
    np.testing.assert_allclose(matrix, hessian(model, _graph(water, model)).numpy(), rtol=0, atol=1e-12)
    # translational sum rule of an exact Hessian: every row sums to zero over the atoms
    rows = matrix.reshape(9, 3, 3).sum(1)
    assert np.abs(rows).max() < 1e-9 * max(1.0, np.abs(matrix).max())


def test_predict_batched_equals_one_by_one(family_name):
    model = make_model(family_name)
    structures = [bpa_frames(1)[0], molecule("CH3CH2OH"), molecule("H2O")]
    batched = model.predict(structures, hessian=True, batch_size=2)
    for k, atoms in enumerate(structures):
        alone = model.predict(atoms)
        assert abs(batched["energy"][k] - alone["energy"]) < 1e-10
        np.testing.assert_allclose(batched["forces"][k], alone["forces"], rtol=0, atol=1e-10)
    assert batched["hessian"][2].shape == (9, 9)


def test_checkpoint_round_trip(family_name, tmp_path):
    model = make_model(family_name)
    path = tmp_path / "model.pt"
    molsym.save(model, path)
    loaded = molsym.load(path)
    assert loaded.config == model.config
    assert loaded.feature_forms == model.feature_forms
    structures = [bpa_frames(1)[0], periodic_copper(repeat=1)]
    before, after = model.predict(structures, stress=False), loaded.predict(structures, stress=False)
    np.testing.assert_array_equal(after["energy"], before["energy"])
    for f_before, f_after in zip(before["forces"], after["forces"]):
        np.testing.assert_array_equal(f_after, f_before)


def _nve_energy_error(model, timestep_fs: float, duration_fs: float = 20.0) -> float:
    """Largest deviation of the total energy from its start (eV/atom), ethanol from 300 K."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = MolSymCalculator(model, dtype="float64")
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    energies = []
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(int(round(duration_fs / timestep_fs)))
    energies = np.array(energies)
    assert np.isfinite(energies).all()
    return float(np.abs(energies - energies[0]).max()) / len(atoms)


def test_nve_conserves_energy(family_name):
    """Velocity Verlet over 20 fs: the energy error falls ~4x when dt halves (forces are the exact
    gradient of a smooth energy), and stays below 1e-4 eV/atom at 0.25 fs even for these random,
    stiff models (which heat ethanol from 300 K to ~800 K)."""
    model = make_model(family_name)
    coarse, fine = _nve_energy_error(model, 0.5), _nve_energy_error(model, 0.25)
    assert fine < 1e-4, f"total energy strayed by {fine:.2e} eV/atom"
    assert 3.0 < coarse / fine < 5.0, f"energy error {coarse:.2e} -> {fine:.2e} eV/atom when dt halves"


@pytest.mark.slow
def test_compiled_path_equals_eager(family_name):
    """CompiledPotential (one inductor graph per dtype) equals eager to 1e-10 in float64, with stress."""
    model = make_model(family_name)
    runner = molsym.CompiledPotential(model)
    for atoms, stress in ((bpa_frames(1)[0], False), (periodic_copper(repeat=1), True)):
        graph = _graph(atoms, model)
        out = runner(graph, stress=stress)
        ref = energy_forces_stress(model, graph, stress=stress)
        for key in [K.ENERGY, K.FORCES] + ([K.STRESS] if stress else []):
            torch.testing.assert_close(out[key], ref[key].detach(), rtol=1e-10, atol=1e-10, msg=key)
