"""Shared fixtures: real structures from ../shared/data (or the shipped copy) and small models."""
from __future__ import annotations

import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

import molsym

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOLSYM_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHIPPED_3BPA = ROOT / "examples" / "data" / "3bpa_subset.xyz"

# The registry of the common suite: small but complete models of every family and every mixed
# stack (float64 tests). One entry here runs the physics (test_physics.py) and every path
# (test_families.py: calculator, predict, checkpoint, compiled path, NVE) for it.
MODEL_CONFIGS = {
    "tensornet": {"family": "tensornet", "channels": 16, "layers": 2, "num_radial": 8},
    "e3nn": {"family": "e3nn", "channels": 8, "layers": 2, "num_radial": 8, "lmax": 2},
    "e3nn_lmax3": {"family": "e3nn", "channels": 4, "layers": 1, "num_radial": 8, "lmax": 3},
    "e3nn_all_paths": {"family": "e3nn", "channels": 4, "layers": 2, "num_radial": 8, "lmax": 2, "paths": "all",
                       "radial_hidden": 16},
    "escn": {"family": "escn", "channels": 4, "layers": 2, "num_radial": 8, "lmax": 3, "mmax": 2,
             "radial_hidden": 16},
    "gaunt": {"family": "gaunt", "channels": 4, "layers": 2, "num_radial": 8, "lmax": 2, "correlation": 3,
              "radial_hidden": 16},
    "gaunt_fft": {"family": "gaunt", "channels": 4, "layers": 2, "num_radial": 8, "lmax": 2, "correlation": 3,
                  "radial_hidden": 16, "backend": "fft"},
    # mixed stacks
    "tensornet+e3nn": {"family": ["tensornet", "e3nn"], "channels": 8, "layers": 2, "num_radial": 8},
    "e3nn+tensornet": {"family": ["e3nn", "tensornet"], "channels": 8, "layers": 2, "num_radial": 8},
    "tensornet+e3nn_lmax3": {"family": ["tensornet", {"family": "e3nn", "lmax": 3, "channels": 4}],
                             "channels": 8, "num_radial": 8, "radial_hidden": 16},
    "tensornet+escn": {"family": ["tensornet", {"family": "escn", "lmax": 2, "mmax": 1}], "channels": 4,
                       "num_radial": 8, "radial_hidden": 16},
    "escn+e3nn": {"family": [{"family": "escn", "lmax": 2, "mmax": 2}, {"family": "e3nn", "paths": "all"}],
                  "channels": 4, "num_radial": 8, "radial_hidden": 16},
    "tensornet+gaunt": {"family": ["tensornet", {"family": "gaunt", "lmax": 2}], "channels": 4, "num_radial": 8,
                        "radial_hidden": 16},
    "escn+gaunt": {"family": [{"family": "escn", "lmax": 2, "mmax": 2}, {"family": "gaunt", "lmax": 2}],
                   "channels": 4, "num_radial": 8, "radial_hidden": 16},
    "tensornet_per_layer": {"family": [{"family": "tensornet", "num_radial": 4},
                                       {"family": "tensornet", "channels": 8}],
                            "channels": 12, "num_radial": 8},
}
ELEMENTS = [1, 6, 7, 8, 29]


def bpa_frames(count: int = 4):
    """The first ``count`` frames of 3BPA (27 atoms, H/C/N/O)."""
    path = SHARED / "3bpa" / "train_300K.xyz"
    if not path.exists():
        path = SHIPPED_3BPA
    return ase.io.read(path, index=f":{count}")


def make_model(name: str, dtype=torch.float64, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = {**MODEL_CONFIGS[name], "elements": ELEMENTS, **overrides}
    model = molsym.Potential.from_config(config).to(dtype)
    # a non-trivial energy scale so that derivative checks see real signal
    model.set_energy_reference(scale=1.0, shift=-0.1)
    return model.eval()


@pytest.fixture(params=sorted(MODEL_CONFIGS))
def family_name(request):
    return request.param


@pytest.fixture
def float64_default():
    """Default dtype float64 for the test (e3nn builds Wigner-D matrices in the default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def bpa():
    return bpa_frames(1)[0]


def periodic_copper(seed: int = 0, repeat: int = 2, shear: float = 0.05):
    """A rattled fcc Cu supercell (4 repeat^3 atoms) with an O interstitial and a sheared (triclinic) cell."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((repeat, repeat, repeat))
    atoms.append("O")
    atoms.positions[-1] = [1.8, 1.8, 1.8]
    rng = np.random.default_rng(seed)
    atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
    atoms.set_cell(atoms.cell.array + shear * rng.standard_normal((3, 3)), scale_atoms=True)
    return atoms
