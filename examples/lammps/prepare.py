"""Write what examples/lammps/in.water reads: a molsym model exported for LAMMPS and a water box.

    python examples/lammps/prepare.py --model runs/demo/best.pt
    cd examples/lammps/run && mpiexec -n 2 lmp -in ../in.water

--model: a molsym checkpoint whose elements include H and O (``make demo`` trains one on 3BPA,
runs/demo/best.pt). Writes OUTPUT/model.pt (``molsym export``) and OUTPUT/water.data (a periodic
box of N^3 H2O at 1 g/cm^3, atom types 1 = O, 2 = H); OUTPUT defaults to examples/lammps/run.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def water_box(molecules_per_side: int):
    spec = importlib.util.spec_from_file_location("bench_systems", ROOT / "benchmarks" / "systems.py")
    systems = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(systems)
    return systems.water_box(molecules_per_side)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "demo" / "best.pt"), help="molsym checkpoint")
    parser.add_argument("--output", default=str(HERE / "run"), help="folder for model.pt and water.data")
    parser.add_argument("--molecules-per-side", type=int, default=4, help="N: N^3 water molecules (4: 192 atoms)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    args = parser.parse_args(argv)

    from molsym.checkpoint import load
    from molsym.export import export
    from molsym.lammps_io import write_data

    if not Path(args.model).exists():
        print(f"no checkpoint at {args.model}: run `make demo` first or pass --model", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model = load(args.model)
    missing = {1, 8} - set(model.elements)
    if missing:
        print(f"{args.model} has no element(s) {sorted(missing)}: water needs H and O", file=sys.stderr)
        return 2
    metadata = export(model, output / "model.pt", dtype=args.dtype)
    atoms = water_box(args.molecules_per_side)
    write_data(atoms, output / "water.data", ["O", "H"])
    print(f"wrote {output / 'model.pt'} ({metadata['dtype']}, cutoff {metadata['cutoff']} A, "
          f"{metadata['message_hops']} message-passing hops) and {output / 'water.data'} ({len(atoms)} atoms)")
    plugin = ROOT / "build" / "lammps" / "molsymplugin.so"
    print(f"run (with .venv/bin on PATH): cd {output} && mpiexec -n 2 lmp -in {HERE / 'in.water'} -var plugin {plugin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
