"""molsym quickstart: energy, forces, Hessian and NVE molecular dynamics for 3BPA.

Run from the repository root::

    python examples/quickstart.py                  # a small, randomly initialised TensorNet
    python examples/quickstart.py --model model.pt # a checkpoint written by molsym.save

The structure is the first 3BPA configuration shipped in examples/data (27
atoms; see examples/data/README.md for source and license). A random model is
not a trained potential: its numbers show the API, not chemistry.
Units: eV, Å, eV/Å, eV/Å², fs, K.
"""
from __future__ import annotations

import argparse
import time
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

DATA = Path(__file__).resolve().parent / "data" / "3bpa_subset.xyz"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint written by molsym.save (default: a random TensorNet)")
    parser.add_argument("--steps", type=int, default=200, help="NVE steps (default 200)")
    parser.add_argument("--timestep", type=float, default=0.5, help="MD time step in fs (default 0.5)")
    parser.add_argument("--temperature", type=float, default=300.0, help="initial temperature in K (default 300)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the velocities")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.timestep <= 0:
        parser.error("--steps must be >= 1 and --timestep > 0")
    return args


def build_model(args):
    """Load ``--model`` or build a small TensorNet for H, C, N, O (random weights, seeded)."""
    if args.model is not None:
        model = molsym.load(args.model)
        print(f"model: {args.model} ({model.config['family']}, elements {model.elements})")
        return model
    torch.manual_seed(args.seed)
    config = {"family": "tensornet", "elements": [1, 6, 7, 8], "channels": 32, "layers": 2, "num_radial": 8}
    print(f"model: random TensorNet {config}")
    return molsym.Potential.from_config(config)


def main(argv=None) -> None:
    args = parse_args(argv)
    atoms = ase.io.read(DATA, index=0)
    print(f"structure: 3BPA frame 0 from {DATA.name}, {len(atoms)} atoms ({atoms.get_chemical_formula()})")
    atoms.calc = MolSymCalculator(build_model(args), device=args.device, dtype="float64")

    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    print(f"energy: {energy:.6f} eV")
    print(f"max force: {np.linalg.norm(forces, axis=1).max():.6f} eV/A")

    start = time.perf_counter()
    hessian = atoms.calc.get_hessian(atoms)
    eigenvalues = np.linalg.eigvalsh(hessian)
    print(f"hessian: shape {hessian.shape}, symmetric to {np.abs(hessian - hessian.T).max():.1e} eV/A^2, "
          f"{time.perf_counter() - start:.1f} s")
    print("lowest hessian eigenvalues (eV/A^2): " + " ".join(f"{v:.4f}" for v in eigenvalues[:6]))

    thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(args.seed))
    dynamics = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
    totals = []

    def report():
        total = atoms.get_potential_energy() + atoms.get_kinetic_energy()
        totals.append(total)
        step = len(totals) - 1
        if step % max(args.steps // 5, 1) == 0 or step == args.steps:
            print(f"  step {step:5d}  E_total {total:.6f} eV  T {atoms.get_temperature():7.1f} K")

    dynamics.attach(report, interval=1)
    print(f"NVE MD: velocity Verlet, {args.steps} steps of {args.timestep} fs from {args.temperature:.0f} K")
    start = time.perf_counter()
    dynamics.run(args.steps)
    totals = np.array(totals)
    elapsed = time.perf_counter() - start
    drift = (totals[-1] - totals[0]) / len(atoms)
    spread = np.abs(totals - totals[0]).max() / len(atoms)
    print(f"energy conservation: drift {drift:.2e} eV/atom, max deviation {spread:.2e} eV/atom "
          f"over {args.steps * args.timestep:.0f} fs ({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
