"""model.predict: documented shapes, batched == one by one, stress only for periodic structures."""
from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import molsym
from molsym.models.derivatives import energy_forces_stress

ROOT = Path(__file__).resolve().parents[1]
BPA = ROOT / "examples" / "data" / "3bpa_subset.xyz"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = {"family": "tensornet", "elements": [1, 6, 7, 8, 29], "channels": 16, "layers": 2, "num_radial": 8}
    model = molsym.Potential.from_config(config).double()
    model.set_energy_reference(shift=-0.1)
    return model.eval()


def mixed_molecules():
    """Structures of different sizes and compositions (27, 9, 3 and 27 atoms)."""
    frames = ase.io.read(BPA, index=":2")
    return [frames[0], molecule("CH3CH2OH"), molecule("H2O"), frames[1]]


def periodic_cells():
    cells = []
    for seed, repeat in ((0, (1, 1, 1)), (1, (2, 1, 1))):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        rng = np.random.default_rng(seed)
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        cells.append(atoms)
    return cells


def test_single_structure_shapes(model):
    atoms = ase.io.read(BPA, index=0)
    out = model.predict(atoms)
    assert set(out) == {"energy", "forces"}  # no stress for a molecule
    assert isinstance(out["energy"], float)
    assert out["forces"].shape == (27, 3) and out["forces"].dtype == np.float64
    water = model.predict(molecule("H2O"), hessian=True)
    assert water["hessian"].shape == (9, 9) and water["hessian"].dtype == np.float64
    reference = energy_forces_stress(model, molsym.from_ase(atoms, model.cutoff))
    assert out["energy"] == pytest.approx(float(reference["energy"].detach()), rel=1e-13)
    np.testing.assert_allclose(out["forces"], reference["forces"].detach().numpy(), atol=1e-13)


def test_list_shapes(model):
    structures = mixed_molecules()
    out = model.predict(structures)
    assert set(out) == {"energy", "forces"}
    assert out["energy"].shape == (4,) and out["energy"].dtype == np.float64
    assert [f.shape for f in out["forces"]] == [(len(a), 3) for a in structures]
    small = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH4")]
    with_hessian = model.predict(small, hessian=True)
    assert [h.shape for h in with_hessian["hessian"]] == [(3 * len(a), 3 * len(a)) for a in small]


@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_batched_predictions_equal_one_by_one(model, batch_size):
    structures = mixed_molecules()
    batched = model.predict(structures, batch_size=batch_size)
    for k, atoms in enumerate(structures):
        alone = model.predict(atoms)
        assert abs(batched["energy"][k] - alone["energy"]) < 1e-10
        np.testing.assert_allclose(batched["forces"][k], alone["forces"], rtol=0, atol=1e-10)


def test_batched_hessians_equal_one_by_one(model):
    structures = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH3CH2OH")]
    structures[2].rattle(0.05, seed=1)
    batched = model.predict(structures, batch_size=3, hessian=True)
    for k, atoms in enumerate(structures):
        np.testing.assert_allclose(batched["hessian"][k], model.predict(atoms, hessian=True)["hessian"], rtol=0, atol=1e-10)


def test_stress_only_for_periodic_structures(model):
    cells = periodic_cells()
    out = model.predict(cells)
    assert out["stress"].shape == (2, 3, 3)
    for k, atoms in enumerate(cells):
        alone = model.predict(atoms)
        assert alone["stress"].shape == (3, 3)
        np.testing.assert_allclose(out["stress"][k], alone["stress"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(alone["stress"], alone["stress"].T, atol=1e-14)
    assert "stress" not in model.predict(cells, stress=False)
    molecules = mixed_molecules()
    assert "stress" not in model.predict(molecules)
    assert "stress" not in model.predict(molecules[:1] + cells)  # mixed: not all periodic
    with pytest.raises(ValueError, match="only defined for fully periodic"):
        model.predict(molecules[0], stress=True)
    slab = cells[0].copy()
    slab.pbc = (True, True, False)
    with pytest.raises(ValueError, match="only defined for fully periodic"):
        model.predict(slab, stress=True)


def test_predict_uses_the_model_dtype(model):
    atoms = molecule("CH3CH2OH")
    single = molsym.Potential.from_config(model.config)
    single.load_state_dict(model.state_dict())
    out32, out64 = single.float().predict(atoms), model.predict(atoms)
    assert out32["forces"].dtype == np.float64  # returned as float64 numpy whatever the model dtype
    assert out32["energy"] == pytest.approx(out64["energy"], abs=1e-4)
    assert out32["energy"] != out64["energy"]  # it really ran in float32


def test_bad_input(model):
    with pytest.raises(ValueError, match="at least one structure"):
        model.predict([])
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(molecule("H2O"), batch_size=0)
    gold = molecule("H2O")
    gold.numbers[0] = 79
    with pytest.raises(ValueError, match=r"atomic number \[79\]"):
        model.predict(gold)


def test_hessian_methods():
    torch.manual_seed(0)
    config = {"family": "e3nn", "elements": [1, 6, 8], "channels": 4, "layers": 1, "num_radial": 8,
              "heads": {"hessian": {"channels": 4}}}
    model = molsym.Potential.from_config(config).double().eval()
    structures = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH3CH2OH")]
    structures[2].rattle(0.05, seed=1)
    exact = model.predict(structures, hessian=True)["hessian"]
    for k, h in enumerate(model.predict(structures, hessian="autograd")["hessian"]):
        np.testing.assert_array_equal(h, exact[k])
    batched = model.predict(structures, batch_size=2, hessian="head")
    for k, atoms in enumerate(structures):
        alone = model.predict(atoms, hessian="head")
        assert alone["hessian"].shape == (3 * len(atoms), 3 * len(atoms))
        np.testing.assert_allclose(batched["hessian"][k], alone["hessian"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(batched["forces"][k], alone["forces"], rtol=0, atol=1e-10)
        graph = molsym.from_ase(atoms, model.cutoff, torch.float64)
        np.testing.assert_array_equal(alone["hessian"], model(graph, heads=("hessian",))["hessian"].detach().numpy())


def test_hessian_method_errors(model):
    with pytest.raises(ValueError, match=r"no 'hessian' head"):
        model.predict(molecule("H2O"), hessian="head")
    with pytest.raises(ValueError, match=r"hessian must be False, True, 'autograd' or 'head', got 'exact'"):
        model.predict(molecule("H2O"), hessian="exact")
