"""Model configs: defaults, validation, clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import molsym
from molsym.models.derivatives import energy_forces_stress


def test_tensornet_defaults():
    model = molsym.Potential.from_config({"family": "tensornet", "elements": [1, 6, 7, 8]})
    cfg = model.config
    assert (cfg["channels"], cfg["layers"], cfg["cutoff"], cfg["num_radial"]) == (128, 2, 4.5, 32)
    assert len(model.interactions) == 2
    assert model.elements == [1, 6, 7, 8]


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "missing required key"),
        ({"elements": [1], "chanels": 8}, "unknown key"),
        ({"elements": [1], "family": "painn"}, "unknown family"),
        ({"elements": [1], "channels": 0}, "'channels' must be positive"),
        ({"elements": [1], "channels": 2.5}, "'channels' must be int"),
        ({"elements": []}, "'elements' must be a non-empty list"),
        ({"elements": [1, 1]}, "duplicates"),
        ({"elements": [1], "layers": 2, "family": ["tensornet"]}, "one per layer"),
        ({"elements": [1], "e0": {6: -1.0}}, "not in 'elements'"),
        ({"elements": [1], "lmax": -1}, "'lmax' must be an integer"),
    ],
)
def test_bad_config_is_refused(config, message):
    with pytest.raises((ValueError, TypeError), match=message):
        molsym.Potential.from_config(config)


def test_element_not_in_model():
    model = molsym.Potential.from_config({"elements": [1, 8], "channels": 8})
    graph = molsym.from_ase(molecule("CH4"), model.cutoff, torch.float32)
    with pytest.raises(ValueError, match=r"atomic number \[6\] not in this model"):
        model(graph)


def test_nan_positions_are_refused():
    atoms = molecule("H2O")
    atoms.positions[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        molsym.from_ase(atoms, 4.5)
    atoms.positions[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        molsym.from_ase(atoms, 4.5)


def test_zero_volume_periodic_cell_is_refused():
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=[[2, 0, 0], [4, 0, 0], [0, 0, 2]], pbc=True)
    with pytest.raises(ValueError, match="zero volume"):
        molsym.from_ase(atoms, 4.5)


def test_stress_needs_a_cell():
    model = molsym.Potential.from_config({"elements": [1, 8], "channels": 8})
    graph = molsym.from_ase(molecule("H2O"), model.cutoff, torch.float32)
    with pytest.raises(ValueError, match="non-zero volume"):
        energy_forces_stress(model, graph, stress=True)


def test_mixed_stack_config_round_trips():
    config = {"elements": [1, 6], "channels": 8, "layers": 3, "family": ["tensornet", "e3nn", "tensornet"]}
    model = molsym.Potential.from_config(config)
    assert [form.kind for form in model.feature_forms] == ["cartesian", "cartesian", "spherical", "cartesian"]
    again = molsym.Potential.from_config(model.config)
    assert again.config == model.config
