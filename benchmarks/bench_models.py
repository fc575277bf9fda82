"""Whole models, energy + forces per call on CPU: eSCN and Gaunt beside TensorNet.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_models.py --json benchmarks/results/models_cpu.json
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_models.py --families gaunt \
        --json benchmarks/results/models_cpu_gaunt.json

``--families escn`` (default): eSCN at lmax 2, 4, 6 (mmax 2, ``--mixing``); ``--families gaunt``:
the Gaunt family at lmax 2, 3, 4 (correlation 3, grid backend); both together with
``--families escn gaunt``.

Same width for all (32 channels, 2 layers, cutoff 5 Å, 16 radial functions), eager, on one
thread: the 27-atom 3BPA molecule and a periodic box of 64 H2O (192 atoms), in float32
and float64. ``energy_forces_stress`` on a prebuilt graph; the models of one row are timed
interleaved, call by call (median of ``--repeats`` after a warm-up), and reported with
their ratio to TensorNet measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_escn import write_json  # noqa: E402
from systems import bpa_molecule, water_box  # noqa: E402

import molsym  # noqa: E402
from molsym.data.graph import to_device  # noqa: E402
from molsym.models.derivatives import energy_forces_stress  # noqa: E402

CUTOFF, WIDTH, LAYERS, RADIAL = 5.0, 32, 2, 16


def models(dtype, mixing: str, families=("escn",)):
    configs = {"tensornet": {"family": "tensornet"}}
    if "escn" in families:
        for lmax in (2, 4, 6):
            configs[f"escn L={lmax}"] = {"family": "escn", "lmax": lmax, "mmax": 2, "mixing": mixing}
    if "gaunt" in families:
        for lmax in (2, 3, 4):
            configs[f"gaunt L={lmax}"] = {"family": "gaunt", "lmax": lmax, "correlation": 3, "backend": "grid"}
    out = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        model = molsym.Potential.from_config({"elements": [1, 6, 7, 8], "channels": WIDTH, "layers": LAYERS,
                                              "cutoff": CUTOFF, "num_radial": RADIAL, **config}).to(dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        out[name] = model
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mixing", default="channelwise", choices=["channelwise", "shared"])
    parser.add_argument("--families", nargs="+", default=["escn"], choices=["escn", "gaunt"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print(f"load average {os.getloadavg()}")
    print("| system | dtype | model | ms | / TensorNet |")
    print("| --- | --- | --- | ---: | ---: |")
    for system, atoms in (("3BPA (27 atoms)", bpa_molecule()), ("water box (192 atoms)", water_box(4))):
        for dtype_name in ("float32", "float64"):
            dtype = getattr(torch, dtype_name)
            graph = to_device(molsym.collate([molsym.from_ase(atoms, CUTOFF)]), dtype=dtype)
            calls = models(dtype, args.mixing, args.families)
            for model in calls.values():
                energy_forces_stress(model, graph)
            times = {name: [] for name in calls}
            for _ in range(args.repeats):
                for name, model in calls.items():
                    start = time.perf_counter()
                    energy_forces_stress(model, graph)
                    times[name].append(time.perf_counter() - start)
            medians = {name: 1e3 * statistics.median(t) for name, t in times.items()}
            for name, ms in medians.items():
                ratio = ms / medians["tensornet"]
                rows.append({"system": system, "dtype": dtype_name, "model": name, "ms": ms, "ratio_tensornet": ratio})
                print(f"| {system} | {dtype_name} | {name} | {ms:.1f} | {ratio:.2f} |", flush=True)
    if args.json:
        write_json(args.json, {"families": args.families, "mixing": args.mixing, "channels": WIDTH, "layers": LAYERS, "threads": 1,
                   "load_average_end": os.getloadavg(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
