"""NVE molecular dynamics through the ASE calculator: total energy is conserved.

The model is a randomly initialised (seeded) TensorNet; the structure is the
first 3BPA frame (27 atoms) with Maxwell-Boltzmann velocities at 300 K. With
velocity Verlet, the total energy of exact, smooth forces fluctuates by
O(dt^2) and does not drift; forces that are not the exact gradient of the
energy, or an energy that jumps when neighbours cross the cutoff (the
neighbour list is rebuilt every step), show up as drift.

Choice of model for the 1000-step test. A random model with the default 32
Bessel functions has radial features down to a 0.28 Å wavelength and no
short-range repulsion: within ~25 fs two atoms fall into a stiff random well
~0.3 Å apart, and the Verlet error there is a few 1e-4 eV/atom at 0.5 fs. That
is integration error, not a bug: it falls as dt^2 (see
``test_verlet_energy_error_is_second_order``, which runs that stiff model).
The conservation test therefore uses 8 radial functions, whose random energy
surface is smooth on the scale of chemical bonds, as a trained one is.
"""
from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

import molsym
from molsym.calculators import MolSymCalculator

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE < 3.29
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, *, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)

ROOT = Path(__file__).resolve().parents[1]
BPA = ROOT / "examples" / "data" / "3bpa_subset.xyz"
SHARED_BPA = ROOT.parent / "shared" / "data" / "3bpa" / "train_300K.xyz"


def first_3bpa_frame():
    return ase.io.read(SHARED_BPA if SHARED_BPA.exists() else BPA, index=0)


def random_tensornet(num_radial: int, seed: int = 0):
    torch.manual_seed(seed)
    config = {"family": "tensornet", "elements": [1, 6, 7, 8], "channels": 32, "layers": 2, "num_radial": num_radial}
    return molsym.Potential.from_config(config)


def run_nve(model, steps: int, timestep_fs: float, seed: int = 0) -> tuple[np.ndarray, float]:
    """Total energy (eV) at every step (steps + 1 values) and the final temperature (K)."""
    atoms = first_3bpa_frame()
    atoms.calc = MolSymCalculator(model, dtype="float64")
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies = []
    dynamics.attach(lambda: energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=1)
    dynamics.run(steps)
    return np.array(energies), atoms.get_temperature()


def assert_energy_conserved(energies: np.ndarray, num_atoms: int, tolerance: float = 1e-4) -> None:
    """Largest deviation of the total energy from its start, and the start-to-end drift, per atom (eV)."""
    deviation = np.abs(energies - energies[0]).max() / num_atoms
    drift = abs(energies[-1] - energies[0]) / num_atoms
    assert np.isfinite(energies).all()
    assert drift < tolerance, f"total-energy drift {drift:.2e} eV/atom over {len(energies) - 1} steps"
    assert deviation < tolerance, f"total energy strayed by {deviation:.2e} eV/atom from its initial value"


def test_nve_conserves_energy_1000_steps():
    """1000 steps of 0.5 fs (0.5 ps): total energy within 1e-4 eV/atom of its initial value throughout.

    About 13 s on 2 CPU cores (measured 10.5 s on one), so it runs in the default suite.
    """
    energies, temperature = run_nve(random_tensornet(num_radial=8), steps=1000, timestep_fs=0.5)
    assert len(energies) == 1001 and temperature > 50  # the molecule really moved
    assert_energy_conserved(energies, 27)


def test_verlet_energy_error_is_second_order():
    """The stiff default-basis random model: the energy error over 20 fs falls ~4x when dt halves.

    Velocity Verlet's energy error is O(dt^2) for forces that are the exact
    gradient of a smooth energy; inconsistent forces would leave an error
    that does not shrink with dt.
    """
    model = random_tensornet(num_radial=32)
    errors = []
    for timestep_fs in (0.5, 0.25):
        energies, _ = run_nve(model, steps=int(round(20 / timestep_fs)), timestep_fs=timestep_fs)
        errors.append(np.abs(energies - energies[0]).max() / 27)
    ratio = errors[0] / errors[1]
    assert 3.0 < ratio < 5.0, f"energy error {errors[0]:.2e} -> {errors[1]:.2e} eV/atom when dt halves (ratio {ratio:.2f})"
