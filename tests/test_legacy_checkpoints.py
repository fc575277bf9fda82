"""Checkpoints written before per-layer settings load and give the same numbers (float64).

The fixtures and the commit that wrote them are described in tests/data/README.md.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase import Atoms

import molsym
from molsym.models.derivatives import energy_forces_stress

FIXTURES = sorted((Path(__file__).parent / "data").glob("legacy_*.pt"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_legacy_checkpoint_reproduces_its_numbers(path):
    model = molsym.load(path)
    references = model.metadata["reference"]
    assert set(references) == {"3bpa", "copper"}
    for name, ref in references.items():
        atoms = Atoms(numbers=ref["numbers"].numpy(), positions=ref["positions"].numpy(),
                      cell=ref["cell"].numpy(), pbc=ref["pbc"].numpy())
        out = energy_forces_stress(model, molsym.from_ase(atoms, model.cutoff, torch.float64),
                                   stress="stress" in ref)
        out = {key: value.detach() for key, value in out.items()}
        # energies of ~2e4 eV (E0 included): 1e-12 relative, a few thousand ulps
        assert float((out["energy"] - ref["energy"]).abs().max()) < 1e-12 * float(ref["energy"].abs().max())
        assert float((out["forces"] - ref["forces"]).abs().max()) < 1e-12
        if "stress" in ref:
            assert float((out["stress"] - ref["stress"]).abs().max()) < 1e-12
