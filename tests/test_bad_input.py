"""Bad input ends in a clear error naming the problem and where it is, or in the right number;
never in NaN, a hang or a lost run. Each case runs through predict, the calculator (float32 and
float64) and the command line."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import molsym
from molsym import CheckpointError
from molsym.calculators import MolSymCalculator
from molsym.data import MIN_DISTANCE, StructureError
from molsym.train.cli import main
from train_helpers import SUBSET, tiny_config, write_config

FAMILIES = {
    "tensornet": {"family": "tensornet", "channels": 8, "layers": 1, "num_radial": 8},
    "e3nn": {"family": "e3nn", "channels": 4, "layers": 1, "num_radial": 8, "lmax": 2},
    "escn": {"family": "escn", "channels": 4, "layers": 1, "num_radial": 8, "lmax": 2, "mmax": 2, "radial_hidden": 16},
}
ELEMENTS = [1, 6, 7, 8, 29]
DEGENERATE_CELLS = {"1e-3": [[2, 0, 0], [2, 1e-3, 0], [0, 0, 2]], "1e-4": [[2, 0, 0], [2, 1e-4, 0], [0, 0, 2]]}


def build(family: str, dtype=torch.float64):
    torch.manual_seed(0)
    model = molsym.Potential.from_config({**FAMILIES[family], "elements": ELEMENTS}).to(dtype)
    model.set_energy_reference(scale=1.0, shift=-0.1)
    return model.eval()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request):
    return build(request.param)


@pytest.fixture(params=["float32", "float64"])
def calculator(model, request):
    return MolSymCalculator(model, dtype=request.param)


def evaluate_all_ways(model, calculator, atoms):
    """Run ``atoms`` through predict, the calculator's energy and forces, and its Hessian."""
    yield lambda: model.predict(atoms)
    yield lambda: model.predict([molecule("H2O"), atoms])  # inside a batch too
    attached = atoms.copy()
    attached.calc = calculator
    yield lambda: attached.get_forces()
    yield lambda: calculator.get_hessian(atoms.copy())


def water_with_a_duplicate(offset: float) -> Atoms:
    atoms = molecule("H2O")
    atoms.append("H")
    atoms.positions[-1] = atoms.positions[1] + [offset, 0, 0]
    return atoms


# --- coincident and nearly coincident atoms ---------------------------------------------------------


@pytest.mark.parametrize("offset", [0.0, 1e-6, 0.05])
def test_coincident_atoms_are_refused_naming_them(model, calculator, offset):
    atoms = water_with_a_duplicate(offset)
    for run in evaluate_all_ways(model, calculator, atoms):
        with pytest.raises(StructureError, match=rf"minimum distance of {MIN_DISTANCE} Å.*atoms 1 and 3 at"):
            run()


def test_atom_on_its_own_periodic_image_is_refused(model, calculator):
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=[[0.05, 0, 0], [0, 3, 0], [0, 0, 3]], pbc=True)
    for run in evaluate_all_ways(model, calculator, atoms):
        with pytest.raises(StructureError, match=r"atoms 0 and 0 \(a periodic image\) at 0.05 Å"):
            run()


def test_atoms_just_beyond_the_minimum_distance_give_finite_numbers(model, calculator):
    atoms = water_with_a_duplicate(1.5 * MIN_DISTANCE)
    out = model.predict(atoms, hessian=True)
    assert math.isfinite(out["energy"]) and np.isfinite(out["forces"]).all() and np.isfinite(out["hessian"]).all()
    atoms.calc = calculator
    assert np.isfinite(atoms.get_forces()).all()


# --- float32 far from the origin, unwrapped crystals -----------------------------------------------


def water():
    atoms = molecule("H2O")
    atoms.rattle(0.02, seed=3)
    return atoms


def copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def forces_stress_four_ways(model, atoms):
    """forces (and stress when periodic) by predict in float32 and float64 and by both calculators."""
    results = {}
    for dtype in ("float32", "float64"):
        cast = copy.deepcopy(model).to(getattr(torch, dtype))
        out = cast.predict(atoms)
        results[f"predict {dtype}"] = (out["forces"], out.get("stress"))
        moved = atoms.copy()
        moved.calc = MolSymCalculator(model, dtype=dtype)
        stress = moved.get_stress(voigt=False) if moved.pbc.all() else None
        results[f"calculator {dtype}"] = (moved.get_forces(), stress)
    return results


@pytest.mark.parametrize("distance", [1e3, 1e6, 1e8])
def test_float32_molecule_far_from_the_origin(model, distance):
    """Forces do not depend on where the molecule sits: 1e-4 eV/Å in float32 wherever it is."""
    near = water()
    far = near.copy()
    far.positions += distance * np.array([1.0, -0.6, 0.3])
    reference, moved = forces_stress_four_ways(model, near), forces_stress_four_ways(model, far)
    for way in reference:
        np.testing.assert_allclose(moved[way][0], reference[way][0], atol=1e-4, rtol=0, err_msg=way)
    np.testing.assert_allclose(moved["predict float32"][0], reference["predict float64"][0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("lattice_vectors", [1, 1e3, 1e5])
def test_float32_crystal_with_an_unwrapped_atom(model, lattice_vectors):
    """A Cu cell with one atom moved by many lattice vectors (as ASE MD leaves it): the same forces
    and stress as the wrapped cell, to 1e-4 eV/Å and 1e-5 eV/Å³ in float32."""
    wrapped = copper()
    unwrapped = wrapped.copy()
    unwrapped.positions[2] += lattice_vectors * (unwrapped.cell[0] - 2 * unwrapped.cell[1] + unwrapped.cell[2])
    reference, moved = forces_stress_four_ways(model, wrapped), forces_stress_four_ways(model, unwrapped)
    for way in reference:
        np.testing.assert_allclose(moved[way][0], reference[way][0], atol=1e-4, rtol=0, err_msg=way)
        np.testing.assert_allclose(moved[way][1], reference[way][1], atol=1e-5, rtol=0, err_msg=way)
    np.testing.assert_allclose(moved["calculator float32"][0], reference["calculator float64"][0], atol=1e-4, rtol=0)


# --- empty structures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pbc", [False, True])
def test_structure_without_atoms_has_zero_energy(model, calculator, pbc):
    empty = Atoms(cell=[3, 3, 3], pbc=pbc)
    out = model.predict(empty, hessian=True)
    assert out["energy"] == 0.0 and out["forces"].shape == (0, 3) and out["hessian"].shape == (0, 0)
    if pbc:
        np.testing.assert_array_equal(out["stress"], np.zeros((3, 3)))
    batch = model.predict([empty, water(), empty])
    single = model.predict(water())
    assert batch["energy"][0] == batch["energy"][2] == 0.0
    assert batch["energy"][1] == pytest.approx(single["energy"], abs=1e-12)
    assert model.predict([empty, empty])["energy"].tolist() == [0.0, 0.0]
    atoms = empty.copy()
    atoms.calc = calculator
    assert atoms.get_potential_energy() == 0.0
    assert atoms.get_forces().shape == (0, 3) and atoms.get_potential_energies().shape == (0,)
    assert calculator.get_hessian(atoms).shape == (0, 0)
    if pbc:
        np.testing.assert_array_equal(atoms.get_stress(), np.zeros(6))


# --- degenerate periodic cells --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(DEGENERATE_CELLS))
def test_nearly_degenerate_cell_is_refused_before_the_search(model, calculator, cell):
    atoms = Atoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=DEGENERATE_CELLS[cell], pbc=True)
    for run in evaluate_all_ways(model, calculator, atoms):
        with pytest.raises(StructureError, match=r"about [\d.e+]+ neighbours per atom .* limit of 5000"):
            run()


def test_thin_but_sane_cell_gives_the_right_numbers(model):
    """A skewed cell (a2 = a1 * 1000 + a short vector) is the same lattice as a reduced one: equal results."""
    skewed = Atoms("Cu2", positions=[[0, 0, 0], [1.3, 1.2, 1.1]], cell=[[2.6, 0, 0], [2600, 2.5, 0], [0, 0, 2.4]],
                   pbc=True)
    reduced = skewed.copy()
    reduced.set_cell([[2.6, 0, 0], [0, 2.5, 0], [0, 0, 2.4]], scale_atoms=False)
    a, b = model.predict(skewed), model.predict(reduced)
    assert a["energy"] == pytest.approx(b["energy"], abs=1e-9)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-9)
    np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-9)


# --- atomic numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 119])
def test_invalid_atomic_number_names_only_the_offending_atoms(model, calculator, bad):
    atoms = molecule("CH3CH2OH")
    atoms.numbers[4] = bad
    for run in evaluate_all_ways(model, calculator, atoms):
        with pytest.raises(StructureError, match=rf"1 atom\(s\) do not: atom 4 \(Z = {bad}\)$"):
            run()


# --- checkpoints -------------------------------------------------------------------------------------------


def _saved(tmp_path: Path, model) -> Path:
    path = tmp_path / "model.pt"
    molsym.save(model, path)
    return path


def test_corrupt_and_non_finite_checkpoints_are_refused_everywhere(tmp_path, model, capsys):
    from test_checkpoint import _flip_bytes_inside_a_weight

    flipped = _saved(tmp_path, model)
    _flip_bytes_inside_a_weight(flipped, model)
    broken = build("tensornet")
    name = next(k for k, v in broken.state_dict().items() if v.is_floating_point() and v.numel() > 1)
    with torch.no_grad():
        broken.state_dict()[name].view(-1)[0] = float("nan")
    nan_path = tmp_path / "nan.pt"
    molsym.save(broken, nan_path)
    for path, message in ((flipped, "do not match the sha256 checksum"), (nan_path, f"non-finite weights.*{name}")):
        with pytest.raises(CheckpointError, match=message):
            molsym.load(path)
        with pytest.raises(CheckpointError, match=message):
            MolSymCalculator.from_checkpoint(path)
        assert main(["eval", "--model", str(path), "--data", str(SUBSET)]) == 2
        assert "error" in capsys.readouterr().err


# --- molsym eval ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = molsym.Potential.from_config({**FAMILIES["tensornet"], "elements": [1, 6, 7, 8]}).double()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    molsym.save(model, path)
    return path


def _relabelled(path: Path, frames) -> Path:
    """The frames with energy and forces stored as REF_energy / REF_forces (MACE style)."""
    out = []
    for atoms in frames:
        copy = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        copy.info["REF_energy"] = atoms.get_potential_energy()
        copy.arrays["REF_forces"] = atoms.get_forces()
        out.append(copy)
    ase.io.write(path, out, format="extxyz")
    return path


def test_eval_with_labels_under_other_keys(tmp_path, checkpoint, capsys):
    data = _relabelled(tmp_path / "ref.xyz", ase.io.read(SUBSET, index=":4"))
    assert main(["eval", "--model", str(checkpoint), "--data", str(data), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no labels to evaluate against" in err and "REF_energy" in err and "REF_forces" in err
    code = main(["eval", "--model", str(checkpoint), "--data", str(data), "--output", str(tmp_path),
                 "--energy-key", "REF_energy", "--forces-key", "REF_forces"])
    out = capsys.readouterr().out
    assert code == 0 and "E MAE meV/at" in out and "F RMSE meV/Å" in out


def test_eval_gives_a_row_per_file(tmp_path, checkpoint, capsys):
    frames = ase.io.read(SUBSET, index=":6")
    first, second = tmp_path / "first.xyz", tmp_path / "second.xyz"
    ase.io.write(first, frames[:2])
    ase.io.write(second, frames[2:])
    assert main(["eval", "--model", str(checkpoint), "--data", str(first), str(second),
                 "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in
            (["first"], ["second"], ["all"])}
    assert set(rows) == {"first", "second", "all"}
    assert "(2 structures)" in out and "(4 structures)" in out
    # each row is its own file's metric; "all" pools them (RMSE of all six)
    e_rmse = [float(rows[name][1]) for name in ("first", "second", "all")]
    pooled = math.sqrt((2 * e_rmse[0] ** 2 + 4 * e_rmse[1] ** 2) / 6)
    assert e_rmse[2] == pytest.approx(pooled, rel=1e-3)
    assert (tmp_path / "parity_forces_first.png").exists() and (tmp_path / "parity_forces_second.png").exists()


# --- training: every split checked before the first step -------------------------------------------------


def _write_frames(path: Path, frames) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


def _train(tmp_path: Path, capsys, train_frames=None, valid_frames=None, test_frames=None, **sections):
    frames = ase.io.read(SUBSET, index=":")
    data = {"train": str(_write_frames(tmp_path / "train.xyz", train_frames or frames[:12])),
            "valid": str(_write_frames(tmp_path / "valid.xyz", valid_frames or frames[12:16])),
            "test": str(_write_frames(tmp_path / "test.xyz", test_frames or frames[16:]))}
    config = tiny_config(tmp_path / "out", data=data, **sections)
    config["model"]["elements"] = [1, 6, 7, 8]
    code = main(["train", str(write_config(tmp_path / "config.yaml", config))])
    return code, capsys.readouterr().err


def _assert_no_step_taken(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not (out / "log.csv").exists() and not (out / "best.pt").exists() and not (out / "last.pt").exists()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_training_refuses_an_unknown_element_in_any_split_before_the_first_step(tmp_path, capsys, split):
    frames = ase.io.read(SUBSET, index=":")
    bad = {"train": frames[:12], "valid": frames[12:16], "test": frames[16:]}[split]
    bad[1].numbers[3] = 9  # fluorine, not in the model
    code, err = _train(tmp_path, capsys, **{f"{split}_frames": bad})
    assert code == 2
    assert "model does not have (model.elements = [1, 6, 7, 8])" in err and "Z = 9 (F)" in err
    assert f"data.{split}: {tmp_path / f'{split}.xyz'}, frame 1" in err
    assert "E0" not in err and "fit" not in err
    _assert_no_step_taken(tmp_path)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_training_refuses_coincident_atoms_naming_file_and_frame(tmp_path, capsys, split):
    frames = ase.io.read(SUBSET, index=":")
    bad = {"train": frames[:12], "valid": frames[12:16], "test": frames[16:]}[split]
    bad[2].positions[5] = bad[2].positions[7]
    code, err = _train(tmp_path, capsys, **{f"{split}_frames": bad})
    assert code == 2
    assert f"data.{split}: {tmp_path / f'{split}.xyz'}, frame 2" in err and "atoms 5 and 7 at 0 Å" in err
    _assert_no_step_taken(tmp_path)


def test_training_refuses_nan_positions_naming_file_and_frame(tmp_path, capsys):
    frames = ase.io.read(SUBSET, index=":")
    valid = frames[12:16]
    valid[3].positions[0, 1] = np.nan
    code, err = _train(tmp_path, capsys, valid_frames=valid)
    assert code == 2
    assert f"data.valid: {tmp_path / 'valid.xyz'}, frame 3: positions contain NaN or inf (atoms [0])" in err
    _assert_no_step_taken(tmp_path)


def test_training_refuses_a_degenerate_cell_naming_file_and_frame(tmp_path, capsys):
    frames = ase.io.read(SUBSET, index=":")
    test = frames[16:]
    test[0].set_cell(DEGENERATE_CELLS["1e-3"], scale_atoms=False)
    test[0].pbc = True
    code, err = _train(tmp_path, capsys, test_frames=test)
    assert code == 2 and f"data.test: {tmp_path / 'test.xyz'}, frame 0" in err and "neighbours per atom" in err
    _assert_no_step_taken(tmp_path)


def test_training_refuses_missing_labels_in_the_test_split(tmp_path, capsys):
    frames = ase.io.read(SUBSET, index=":")
    test = [Atoms(a.numbers, a.positions) for a in frames[16:]]  # no energies, no forces
    code, err = _train(tmp_path, capsys, test_frames=test)
    assert code == 2 and f"{tmp_path / 'test.xyz'}, frame 0: required energy not found" in err
    _assert_no_step_taken(tmp_path)
