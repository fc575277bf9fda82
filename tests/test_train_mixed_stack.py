"""A per-layer mixed stack trains through `molsym train` and runs MD through the calculator."""
from __future__ import annotations

import ase.io
import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet

import molsym
from molsym.calculators import MolSymCalculator
from molsym.train.cli import main
from molsym.train.log import read_csv
from test_md import thermalize_momenta
from train_helpers import SUBSET, tiny_config, write_config

MIXED = {"family": ["tensornet", {"family": "e3nn", "lmax": 3, "radial_hidden": 16}], "channels": 8,
         "num_radial": 8, "cutoff": 4.5}


def test_mixed_stack_trains_and_runs_md(tmp_path):
    config = tiny_config(tmp_path / "out", epochs=2, model=MIXED)
    config["model"] = dict(MIXED)
    assert main(["train", str(write_config(tmp_path / "config.yaml", config))]) == 0
    rows = read_csv(tmp_path / "out" / "log.csv")
    assert len(rows) == 2 and all(np.isfinite(row["valid_loss"]) for row in rows)
    model = molsym.load(tmp_path / "out" / "best.pt")
    assert model.config["family"] == MIXED["family"]  # per-layer entries kept as plain data
    assert model.feature_forms[-1].lmax == 3
    atoms = ase.io.read(SUBSET, index=0)
    atoms.calc = MolSymCalculator(model, dtype="float64")
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    energies = []
    dynamics = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(40)
    energies = np.array(energies)
    assert np.isfinite(energies).all()
    assert np.abs(energies - energies[0]).max() / len(atoms) < 1e-4
