"""End-to-end training runs: files written, models usable, data formats, refusal to overwrite a run, eval."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import molsym
from molsym.calculators import MolSymCalculator
from molsym.train.cli import main
from molsym.train.log import read_csv
from train_helpers import SUBSET, tiny_config, write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 4-epoch run of the tiny model, shared by the tests that only read its files."""
    root = tmp_path_factory.mktemp("run")
    config = tiny_config(root / "out", epochs=4, schedule={"type": "cosine", "warmup_epochs": 1})
    assert main(["train", str(write_config(root / "config.yaml", config))]) == 0
    return root


def test_run_writes_checkpoints_logs_and_results(trained):
    out = trained / "out"
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "log.csv", "results.json"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    rows = read_csv(out / "log.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    for key in ("lr", "train_loss", "valid_loss", "valid_energy_rmse_mev_atom", "valid_forces_rmse_mev_a",
                "train_forces_mae_mev_a", "structures_per_s"):
        assert all(np.isfinite(row[key]) for row in rows), key
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"valid"} and results["valid"]["forces_rmse_mev_a"] > 0


def test_best_checkpoint_is_a_model(trained):
    best = trained / "out" / "best.pt"
    model = molsym.load(best)
    assert model.metadata["epoch"] >= 1 and len(model.metadata["history"]) == model.metadata["epoch"]
    atoms = __import__("ase.io").io.read(SUBSET, index=0)
    atoms.calc = MolSymCalculator.from_checkpoint(best)
    forces = atoms.get_forces()
    assert forces.shape == (27, 3) and np.isfinite(forces).all()
    # E0 from the config, shift and scale from the training statistics are in the model
    assert model.config["e0"] == {1: -13.587222780835477, 6: -1029.4889999855063, 7: -1484.9814568572233,
                                  8: -2041.9816003861047}
    assert model.config["scale"] > 0.1 and model.config["shift"] != 0.0


def test_last_checkpoint_holds_training_state(trained):
    payload = torch.load(trained / "out" / "last.pt", weights_only=True)
    training = payload["training"]
    assert training["position"]["epoch"] == 4 and training["position"]["step_in_epoch"] == 0
    assert {"optimizer", "schedule", "ema", "random", "history", "config", "model"} <= set(training)
    assert molsym.load(trained / "out" / "last.pt").elements == [1, 6, 7, 8]


def test_existing_run_is_not_overwritten(trained, capsys):
    config = tiny_config(trained / "out")
    code = main(["train", str(write_config(trained / "again.yaml", config))])
    assert code == 2 and "already holds a run" in capsys.readouterr().err


def test_resume_refuses_changed_config(trained, capsys):
    config = tiny_config(trained / "out", epochs=4, schedule={"type": "cosine", "warmup_epochs": 1},
                         optimizer={"lr": 0.5})
    code = main(["train", str(write_config(trained / "changed.yaml", config)), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "optimizer.lr" in err


def test_resume_without_a_run(tmp_path, capsys):
    code = main(["train", str(write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "none"))), "--resume"])
    assert code == 2 and "no run to resume" in capsys.readouterr().err


def test_eval_prints_metrics_and_writes_plots(trained, capsys):
    best = trained / "out" / "best.pt"
    code = main(["eval", "--model", str(best), "--data", str(SUBSET), "--output", str(trained / "plots")])
    out = capsys.readouterr().out
    assert code == 0 and "F RMSE meV/Å" in out and "20 structures" in out
    for name in ("parity_energy_3bpa_subset.png", "parity_forces_3bpa_subset.png", "learning_curve.png"):
        assert (trained / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = main(["eval", "--model", str(best), "--data", str(SUBSET), "--exclude", str(SUBSET)])
    assert code == 2 and "removes every structure" in capsys.readouterr().err


def test_eval_metrics_equal_training_metrics(trained):
    """molsym eval on the validation structures reproduces the run's final validation metrics."""
    from molsym.train.config import load_config
    from molsym.train.data import build_splits
    from molsym.train.distributed import World
    from molsym.train.evaluate import evaluate, loader

    config = load_config(trained / "config.yaml")
    model = molsym.load(trained / "out" / "best.pt")
    splits = build_splits(config, model.cutoff, torch.float64)
    sums, _ = evaluate(model, loader(splits.valid, 3, World()), device="cpu", dtype=torch.float64, world=World(),
                       targets={"forces": True, "stress": False})
    results = json.loads((trained / "out" / "results.json").read_text())["valid"]
    for key, value in sums.metrics().items():
        assert value == pytest.approx(results[key], rel=1e-10), key


def test_trains_on_streamed_oc20_lmdb_with_fixed_atoms(tmp_path):
    pytest.importorskip("ase_db_backends")
    from molsym.data.readers import write_oc20_synthetic

    write_oc20_synthetic(tmp_path / "train.aselmdb", num_systems=3, frames_per_system=2, size=(2, 2, 3), seed=1)
    write_oc20_synthetic(tmp_path / "valid.aselmdb", num_systems=2, frames_per_system=1, size=(2, 2, 3), seed=2)
    config = tiny_config(tmp_path / "out", epochs=2, data={
        "train": str(tmp_path / "train.aselmdb"), "valid": str(tmp_path / "valid.aselmdb"),
        "reference_energy_key": "ref_energy", "e0": None, "batch_size": 2},
        model={**tiny_config(tmp_path)["model"], "cutoff": 5.0})
    assert main(["train", str(write_config(tmp_path / "c.yaml", config))]) == 0
    model = molsym.load(tmp_path / "out" / "best.pt")
    assert {29, 78} <= set(model.elements) and model.config["e0"] is None
    from molsym.train.loop import Run
    from molsym.train.distributed import World
    from molsym.train.config import load_config

    run = Run(load_config(tmp_path / "c.yaml") | {"output": str(tmp_path / "probe")}, World(), resume=False)
    assert type(run.splits.train).__name__ == "AseDbDataset"  # streamed, not read whole


def test_trains_on_stress_of_periodic_cells(tmp_path):
    """Stress labels (EMT, eV/Å³) of rattled, strained Cu cells enter the loss and the metrics."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    frames = []
    for index in range(8):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.02 * rng.normal(size=(3, 3))), scale_atoms=True)
        atoms.rattle(0.05, seed=index)
        atoms.calc = EMT()
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, energy=atoms.get_potential_energy(),
                                              forces=atoms.get_forces(), stress=atoms.get_stress())
        frames.append(labelled)
    ase.io.write(tmp_path / "cu.xyz", frames)
    config = tiny_config(tmp_path / "out", epochs=2, data={"train": str(tmp_path / "cu.xyz"), "batch_size": 2, "e0": None,
                                                           "valid_fraction": 0.25},
                         loss={"energy": 1.0, "forces": 1.0, "stress": 100.0})
    assert main(["train", str(write_config(tmp_path / "c.yaml", config))]) == 0
    row = read_csv(tmp_path / "out" / "log.csv")[-1]
    assert row["valid_stress_rmse_mev_a3"] > 0 and row["train_stress_mae_mev_a3"] > 0


def test_trains_on_hessians_from_an_ase_db(tmp_path):
    """Hessian labels stored in an ASE db row's data train through sampled rows (second derivatives)."""
    import ase.db
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from conftest import make_model
    from molsym.data.graph import from_ase
    from molsym.models.derivatives import energy_forces_stress, hessian

    teacher = make_model("tensornet", seed=5, channels=8, layers=1)
    db = ase.db.connect(tmp_path / "labels.db")
    for atoms in ase.io.read(SUBSET, index=":4"):
        graph = from_ase(atoms, teacher.cutoff)
        out = energy_forces_stress(teacher, graph)
        atoms.calc = SinglePointCalculator(atoms, energy=float(out["energy"].detach()[0]),
                                           forces=out["forces"].detach().numpy())
        db.write(atoms, data={"hessian": hessian(teacher, graph).numpy()})
    config = tiny_config(tmp_path / "out", epochs=2, data={"train": str(tmp_path / "labels.db"), "batch_size": 2,
                                                           "valid_fraction": 0.25, "e0": None},
                         loss={"energy": 1.0, "forces": 10.0, "hessian": 1.0, "hessian_rows": 2})
    assert main(["train", str(write_config(tmp_path / "c.yaml", config))]) == 0
    rows = read_csv(tmp_path / "out" / "log.csv")
    assert all(row["train_hessian_rmse_mev_a2"] > 0 and row["valid_hessian_mae_mev_a2"] > 0 for row in rows)


def test_trains_on_oc20_s2ef_extxyz_with_worker_processes(tmp_path):
    """OC20 S2EF extxyz + frame log (tags, move_mask, reference energies), loaded by 2 DataLoader workers."""
    from molsym.data.readers import oc20_synthetic_frames, write_s2ef_extxyz
    from molsym.train.data import file_format

    frames = oc20_synthetic_frames(num_systems=2, frames_per_system=3, size=(2, 2, 3), seed=3)
    extxyz, _ = write_s2ef_extxyz(frames, tmp_path / "s2ef.extxyz")
    assert file_format(str(extxyz)) == "oc20_s2ef"
    config = tiny_config(tmp_path / "out", epochs=1, model={**tiny_config(tmp_path)["model"], "cutoff": 5.0},
                         data={"train": str(extxyz), "reference_energy_key": "ref_energy", "e0": None,
                               "batch_size": 2, "valid_fraction": 0.34, "num_workers": 2})
    assert main(["train", str(write_config(tmp_path / "c.yaml", config))]) == 0
    from molsym.train.config import load_config
    from molsym.train.data import build_splits, sample_of

    splits = build_splits(load_config(tmp_path / "c.yaml"), 5.0, torch.float64)
    sample = sample_of(splits.train, 0)
    reference = sample.atoms.info["ref_energy"]
    assert sample.targets["fixed"].any() and set(sample.targets["tags"]) >= {0, 1, 2}
    assert abs(sample.targets["energy"][0]) < abs(reference)  # the reference energy was subtracted


def test_tensorboard_events_or_a_clear_error(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out", epochs=1, tensorboard=True))
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert main(["train", str(config)]) == 2
        assert "tensorboard package is not installed" in capsys.readouterr().err
        return
    assert main(["train", str(config)]) == 0
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))


def test_trains_a_hessian_head_on_horm_arrays(tmp_path):
    """HORM (read from ../shared, never copied): a direct Hessian loss on the head next to energy and forces
    (E0: the 3BPA isolated atoms, the same wB97X/6-31G(d) level)."""
    from conftest import SHARED

    path = SHARED / "horm_sample100" / "sample_100_DERIVED.npz"
    if not path.exists():
        pytest.skip("HORM sample not available")
    model = {**tiny_config(tmp_path)["model"], "heads": {"hessian": {"channels": 4}}}
    config = tiny_config(tmp_path / "out", epochs=3, model=model,
                         data={"train": str(path), "max_structures": 16, "valid_fraction": 0.25},
                         loss={"energy": 1.0, "forces": 10.0, "hessian_head": 1.0})
    assert main(["train", str(write_config(tmp_path / "c.yaml", config))]) == 0
    rows = read_csv(tmp_path / "out" / "log.csv")
    assert all(row["valid_hessian_head_mae_mev_a2"] > 0 for row in rows)
    assert rows[-1]["train_hessian_head_rmse_mev_a2"] < rows[0]["train_hessian_head_rmse_mev_a2"]
    trained = molsym.load(tmp_path / "out" / "best.pt")
    assert trained.config["heads"]["hessian"]["channels"] == 4


def test_a_head_loss_needs_a_head(tmp_path, capsys):
    config = tiny_config(tmp_path / "out", loss={"hessian_head": 1.0})
    assert main(["train", str(write_config(tmp_path / "c.yaml", config))]) != 0
    assert "loss.hessian_head is positive but the model has no Hessian head" in capsys.readouterr().err
