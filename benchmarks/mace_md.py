"""MD steps per second of MACE through its ASE calculator, on the water boxes of bench_lammps.py.

Runs in an environment with mace-torch (``make mace-venv``; not a molsym dependency), usually as
a subprocess of ``bench_lammps.py --mace-python mace-venv/bin/python`` so that its rows come from
the same run as molsym's:

    OMP_WAIT_POLICY=PASSIVE mace-venv/bin/python benchmarks/mace_md.py --sizes 4 8 16 --steps 10 4 2

Model: MACE (mace-torch's ``MACE`` with its residual interaction blocks), random weights (seed 0),
hidden irreps ``{channels}x0e + {channels}x1o`` (32 channels by default, beside molsym's
32-channel TensorNet), spherical harmonics to l = 3, correlation 3 (body order 4), 2 interactions,
cutoff 4.5 Å, 8 Bessel functions, radial MLP [64, 64, 64]; ``MACECalculator(models=...)`` on CPU
in eager mode (its ``compile_mode`` needs a torch.compile set-up not measured here), one thread.
Timing as in bench_lammps.ase_rate: ASE VelocityVerlet at 0.5 fs, one warm-up step, then the
timed steps. Prints one JSON object: {"mace_version", "model", "rows": [{"atoms", "steps",
"mace_ase_eager"}]}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from systems import water_box  # noqa: E402

TIMESTEP_FS = 0.5


def mace_model(channels: int, dtype: torch.dtype):
    """A random-weight MACE for H and O (see the module docstring for its settings)."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    model = modules.MACE(
        r_max=4.5, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=2, hidden_irreps=o3.Irreps(f"{channels}x0e + {channels}x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(2), avg_num_neighbors=40.0,
        atomic_numbers=[1, 8], correlation=3, gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64])
    return model.to(dtype).eval()


def rate(model, atoms, steps: int, dtype: str) -> float:
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from mace.calculators import MACECalculator

    atoms = atoms.copy()
    atoms.calc = MACECalculator(models=model, device="cpu", default_dtype=dtype)
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dynamics.run(1)  # warm-up
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16], help="molecules per box side")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 4, 2], help="timed steps per size")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)
    if len(args.steps) != len(args.sizes):
        parser.error("give one --steps value per --sizes value")
    import mace

    torch.set_num_threads(1)
    model = mace_model(args.channels, getattr(torch, args.dtype))
    rows = []
    for n, steps in zip(args.sizes, args.steps):
        atoms = water_box(n)
        rows.append({"atoms": len(atoms), "steps": steps, "mace_ase_eager": rate(model, atoms, steps, args.dtype)})
        print(f"# {len(atoms)} atoms: {rows[-1]['mace_ase_eager']:.3f} steps/s", file=sys.stderr, flush=True)
    model_info = {"hidden_irreps": f"{args.channels}x0e + {args.channels}x1o", "max_ell": 3, "correlation": 3,
                  "num_interactions": 2, "r_max": 4.5, "num_bessel": 8, "radial_MLP": [64, 64, 64],
                  "parameters": sum(p.numel() for p in model.parameters())}
    print(json.dumps({"mace_version": getattr(mace, "__version__", "unknown"), "model": model_info, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
