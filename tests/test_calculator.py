"""The ASE calculator: ASE's contract, agreement with the model, stress and Hessian against finite differences."""
from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress

import molsym
from molsym.calculators import MolSymCalculator
from molsym.data import keys as K
from molsym.models.derivatives import energy_forces_stress
from conftest import periodic_copper

ROOT = Path(__file__).resolve().parents[1]
BPA = ROOT / "examples" / "data" / "3bpa_subset.xyz"
PROPERTIES = ("energy", "free_energy", "energies", "forces", "stress", "hessian")


def small_model(seed: int = 0, dtype=torch.float64, **overrides):
    torch.manual_seed(seed)
    config = {"family": "tensornet", "elements": [1, 6, 7, 8, 29], "channels": 16, "layers": 2,
              "num_radial": 8, **overrides}
    model = molsym.Potential.from_config(config).to(dtype)
    model.set_energy_reference(shift=-0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return small_model()


def bpa():
    return ase.io.read(BPA, index=0)


def rattled_copper(seed: int = 0):
    """One Cu fcc cubic cell (4 atoms) plus an O interstitial, rattled, with a sheared cell."""
    return periodic_copper(seed, repeat=1, shear=0.1)


def rattled_ethanol(seed: int = 0):
    atoms = molecule("CH3CH2OH")
    atoms.positions += 0.05 * np.random.default_rng(seed).standard_normal(atoms.positions.shape)
    return atoms


class ForwardCounter:
    """Counts forward passes of a module and records the dtype of the positions it received."""

    def __init__(self, module):
        self.calls = 0
        self.dtypes = []
        module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        self.dtypes.append(args[0][K.POSITIONS].dtype)


# --- ASE contract -----------------------------------------------------------------


def test_implemented_properties_is_a_class_level_tuple(model):
    assert MolSymCalculator.implemented_properties == PROPERTIES
    assert isinstance(MolSymCalculator.implemented_properties, tuple)
    for atoms in (bpa(), rattled_copper()):
        calc = MolSymCalculator(model)
        atoms.calc = calc
        atoms.get_forces()
        assert "implemented_properties" not in vars(calc)
        assert calc.implemented_properties is MolSymCalculator.implemented_properties
    assert MolSymCalculator.implemented_properties == PROPERTIES


def test_energy_and_forces_equal_the_model(model):
    atoms = bpa()
    atoms.calc = MolSymCalculator(model, dtype="float64")
    out = energy_forces_stress(model, molsym.from_ase(atoms, model.cutoff), forces=True)
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    np.testing.assert_allclose(energy, float(out[K.ENERGY].detach()), rtol=1e-13, atol=1e-13)
    assert atoms.get_potential_energy(force_consistent=True) == energy
    forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and forces.dtype == np.float64
    np.testing.assert_allclose(forces, out[K.FORCES].detach().numpy(), rtol=1e-12, atol=1e-12)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    np.testing.assert_allclose(energies.sum(), energy, rtol=1e-12)
    assert model.predict(atoms)["energy"] == pytest.approx(energy, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64", torch.float32])
def test_dtype_is_honoured_end_to_end(model, dtype):
    expected = torch.float32 if dtype in ("float32", torch.float32) else torch.float64
    calc = MolSymCalculator(model, dtype=dtype)
    assert all(p.dtype == expected for p in calc.model.parameters())
    assert all(b.dtype == expected for b in calc.model.buffers() if b.is_floating_point())
    counter = ForwardCounter(calc.model)
    atoms = bpa()
    atoms.calc = calc
    forces = atoms.get_forces()
    assert counter.dtypes == [expected]
    assert forces.dtype == np.float64  # results are float64 numpy, as ASE expects
    reference = MolSymCalculator(model, dtype="float64")
    e64, f64 = reference.get_potential_energy(atoms), reference.get_forces(atoms)
    # float32 carries ~7 significant digits through two message-passing layers
    tol = 1e-12 if expected == torch.float64 else 1e-5
    assert abs(atoms.get_potential_energy() - e64) <= tol * max(1.0, abs(e64)) * len(atoms)
    np.testing.assert_allclose(forces, f64, atol=tol * max(1.0, np.abs(f64).max()) * 10)
    assert next(model.parameters()).dtype == torch.float64  # the model passed in is left alone


def test_invalid_dtype_and_model(model):
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        MolSymCalculator(model, dtype="float16")
    with pytest.raises(TypeError, match="molsym.Potential"):
        MolSymCalculator(torch.nn.Linear(2, 2))


# --- stress -------------------------------------------------------------------------


def test_stress_matches_finite_differences(model):
    atoms = rattled_copper()
    atoms.calc = MolSymCalculator(model, dtype="float64")
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    assert np.abs(stress).max() > 1e-4  # a real signal, not a trivially zero stress
    numerical = calculate_numerical_stress(atoms, eps=1e-6)
    # central differences with strain 1e-6: truncation ~1e-12 times the third strain
    # derivative, rounding ~1e-16 * |E| / (1e-6 * V) ~ 1e-11 eV/Å³ here; 1e-8 leaves
    # three decades of margin and is far below the 1e-3 eV/Å³ scale of the stress.
    np.testing.assert_allclose(stress, numerical, rtol=0, atol=1e-8)
    full = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(full, full.T, atol=1e-15)


def test_stress_of_a_non_periodic_system_is_a_clear_error(model):
    molecule_in_box = bpa()  # has a 50 Å cell, but pbc=False
    molecule_in_box.calc = MolSymCalculator(model)
    energy = molecule_in_box.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError, match="only defined for fully periodic"):
        molecule_in_box.get_stress()
    assert molecule_in_box.get_potential_energy() == energy  # the calculator still works
    slab = rattled_copper()
    slab.pbc = (True, True, False)
    slab.calc = MolSymCalculator(model)
    with pytest.raises(PropertyNotImplementedError, match=r"pbc=\[True, True, False\]"):
        slab.get_stress()


# --- Hessian --------------------------------------------------------------------------


def finite_difference_hessian(calc, atoms, h: float) -> np.ndarray:
    """-(F(x + h e_k) - F(x - h e_k)) / 2h for every coordinate k, (3N, 3N)."""
    positions = atoms.get_positions()
    rows = []
    for k in range(positions.size):
        displaced = []
        for sign in (1.0, -1.0):
            probe = atoms.copy()
            p = positions.copy()
            p.flat[k] += sign * h
            probe.set_positions(p)
            displaced.append(calc.get_forces(probe).ravel())
        rows.append(-(displaced[0] - displaced[1]) / (2 * h))
    return np.array(rows)


@pytest.mark.parametrize("make_atoms", [rattled_ethanol, rattled_copper], ids=["ethanol", "periodic-Cu"])
def test_hessian_matches_finite_differences_of_forces(model, make_atoms):
    atoms = make_atoms()
    calc = MolSymCalculator(model, dtype="float64")
    hessian = calc.get_hessian(atoms)
    n3 = 3 * len(atoms)
    assert hessian.shape == (n3, n3) and hessian.dtype == np.float64
    scale = np.abs(hessian).max()
    assert scale > 1e-2
    np.testing.assert_allclose(hessian, hessian.T, rtol=0, atol=1e-12 * scale)
    # Central differences: error = h^2/6 * d^3F/dx^3 + rounding (~1e-16 |F| / h, ~1e-12 here).
    # With h = 1e-4 Å the truncation is ~1e-6 relative; the exact Hessian must agree to that
    # level AND the residual must shrink as h^2 (ratio 4 when h halves), which a Hessian
    # that differed from the true second derivative by any fixed amount would not do.
    error_h = np.abs(finite_difference_hessian(calc, atoms, 1e-4) - hessian).max() / scale
    error_2h = np.abs(finite_difference_hessian(calc, atoms, 2e-4) - hessian).max() / scale
    assert error_h < 5e-6, f"relative Hessian error {error_h:.2e} vs finite differences (h = 1e-4 Å)"
    assert 3.5 < error_2h / error_h < 4.5, f"finite-difference error not O(h^2): {error_2h:.2e} -> {error_h:.2e}"


def test_hessian_is_cached_until_the_atoms_change(model):
    calc = MolSymCalculator(model)
    with pytest.raises(ValueError, match="needs atoms"):
        calc.get_hessian()
    counter = ForwardCounter(calc.model)
    atoms = rattled_ethanol()
    first = calc.get_hessian(atoms)
    assert counter.calls == 1
    np.testing.assert_array_equal(calc.get_hessian(atoms), first)
    np.testing.assert_array_equal(calc.get_hessian(), first)
    assert counter.calls == 1
    atoms.positions[0, 0] += 0.01
    second = calc.get_hessian(atoms)
    assert counter.calls == 2 and not np.array_equal(first, second)
    calc.get_hessian(atoms)[0, 0] = 1e9  # callers get copies
    assert calc.get_hessian(atoms)[0, 0] == second[0, 0]


# --- caching, neighbour lists, bad input ------------------------------------------------


def test_results_are_cached_through_check_state(model):
    atoms = rattled_copper()
    calc = MolSymCalculator(model)
    atoms.calc = calc
    counter = ForwardCounter(calc.model)
    forces = atoms.get_forces()
    atoms.get_forces()
    atoms.get_potential_energy()
    atoms.get_potential_energies()
    atoms.get_stress()
    assert counter.calls == 1
    assert calc.calculation_required(atoms, ["forces"]) is False
    atoms.positions[1] += 0.02
    assert calc.calculation_required(atoms, ["forces"]) is True
    moved = atoms.get_forces()
    assert counter.calls == 2 and not np.allclose(moved, forces)
    atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=True)
    atoms.get_stress()
    assert counter.calls == 3


def test_neighbour_list_is_rebuilt_every_call(model):
    atoms = bpa()
    atoms.calc = MolSymCalculator(model)
    atoms.get_potential_energy()
    atoms.positions[:5] += [6.0, 0.0, 0.0]  # breaks bonds and makes new neighbours
    fresh = energy_forces_stress(model, molsym.from_ase(atoms, model.cutoff), forces=True)
    np.testing.assert_allclose(atoms.get_potential_energy(), float(fresh[K.ENERGY].detach()), rtol=1e-13)
    np.testing.assert_allclose(atoms.get_forces(), fresh[K.FORCES].detach().numpy(), atol=1e-12)


def test_bad_input_gives_clear_errors(model):
    calc = MolSymCalculator(model)
    iron = molecule("H2O")
    iron.numbers[0] = 26
    with pytest.raises(ValueError, match=r"atomic number \[26\].*built for \[1, 6, 7, 8, 29\]"):
        calc.get_potential_energy(iron)
    nan = molecule("H2O")
    nan.positions[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        calc.get_forces(nan)
    flat = bulk("Cu", "fcc", a=3.6, cubic=True)
    flat.cell[2] = flat.cell[0] + flat.cell[1]
    with pytest.raises(ValueError, match="zero volume"):
        calc.get_potential_energy(flat)


def test_from_checkpoint(model, tmp_path):
    path = tmp_path / "model.pt"
    molsym.save(model, path, {"note": "test"})
    atoms = rattled_copper()
    direct = MolSymCalculator(model)
    loaded = MolSymCalculator.from_checkpoint(path, device="cpu", dtype="float64")
    assert loaded.get_potential_energy(atoms) == direct.get_potential_energy(atoms)
    np.testing.assert_array_equal(loaded.get_stress(atoms), direct.get_stress(atoms))
    single = MolSymCalculator.from_checkpoint(path, dtype="float32")
    assert next(single.model.parameters()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_matches_cpu(model):
    atoms = rattled_copper()
    cpu = MolSymCalculator(model, device="cpu")
    gpu = MolSymCalculator(model, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    assert gpu.get_potential_energy(atoms) == pytest.approx(cpu.get_potential_energy(atoms), rel=1e-10)
    np.testing.assert_allclose(gpu.get_forces(atoms), cpu.get_forces(atoms), atol=1e-10)
    np.testing.assert_allclose(gpu.get_stress(atoms), cpu.get_stress(atoms), atol=1e-10)
    np.testing.assert_allclose(gpu.get_hessian(atoms), cpu.get_hessian(atoms), atol=1e-9)


def test_hessian_property_and_methods_are_cached_separately():
    model = small_model(heads={"hessian": {"cutoff": 4.0, "channels": 4}})
    calc = MolSymCalculator(model)
    counter = ForwardCounter(calc.model)
    atoms = rattled_ethanol()
    exact = calc.get_hessian(atoms)
    assert counter.calls == 1
    np.testing.assert_array_equal(calc.get_property("hessian", atoms), exact)  # ASE's route, from the cache
    head = calc.get_hessian(atoms, method="head")
    assert counter.calls == 3  # the energy and forces of get_property, then the head's forward
    assert head.shape == exact.shape and not np.array_equal(head, exact)
    np.testing.assert_array_equal(calc.get_hessian(atoms, method="head"), head)
    np.testing.assert_array_equal(calc.get_hessian(atoms, method="autograd"), exact)
    assert counter.calls == 3
    atoms.positions[0, 0] += 0.01
    assert not np.array_equal(calc.get_hessian(atoms, method="head"), head)
    assert counter.calls == 4
    with pytest.raises(ValueError, match=r"method must be one of \['autograd', 'head'\]"):
        calc.get_hessian(atoms, method="finite differences")


def test_hessian_head_without_a_head_is_refused(model):
    calc = MolSymCalculator(model)
    with pytest.raises(ValueError, match=r"no 'hessian' head .*heads: \{'hessian'"):
        calc.get_hessian(rattled_ethanol(), method="head")
