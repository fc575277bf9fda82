"""Hessians: the HIP head (one forward pass) vs the exact autograd Hessian (vmap over rows).

Run from the repository root:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_hessian.py [--sizes 10 27 108] [--device cpu]

Systems (deterministic): acetone (10 atoms, ``ase.build.molecule("CH3COCH3")``), the 27-atom
3BPA molecule (first frame of 3BPA train_300K.xyz), and k copies of 3BPA (frames 0..k-1) on a
grid 9 Å apart (108 = 4 copies, 297 = 11 copies). Models, random weights (seed 0), frozen:
TensorNet (128 channels, 2 layers) and e3nn (32 channels, lmax 2, 2 layers), both cutoff
4.5 Å, each with a Hessian head (16 channels, cutoff 4.5 Å).

Each (family, dtype, system, method) runs in a fresh process so that its peak memory is its own:
the model and graph are built, one call warms up, then ``--repeats`` calls are timed (median).
Columns: seconds per Hessian; peak memory: the process's maximum resident set minus the
resident set after building the model (CPU), or ``torch.cuda.max_memory_allocated`` (CUDA).
``autograd`` is ``molsym.models.derivatives.hessian`` (vector-Hessian products batched by vmap,
32 rows per chunk); ``head`` is ``model(graph, heads=("hessian",))`` under
``torch.no_grad``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FAMILIES = {
    "tensornet": {"family": "tensornet", "channels": 128, "layers": 2},
    "e3nn": {"family": "e3nn", "channels": 32, "layers": 2, "lmax": 2},
}
HEAD = {"hessian": {"channels": 16}}


def system(size: int):
    import numpy as np
    from ase.build import molecule

    from systems import bpa_frames

    if size == 10:
        return molecule("CH3COCH3")
    if size % 27:
        raise ValueError(f"sizes are 10 or multiples of 27 (copies of 3BPA), got {size}")
    frames = bpa_frames(size // 27)
    atoms = frames[0].copy()
    atoms.positions -= atoms.positions.mean(0)
    for k, frame in enumerate(frames[1:], start=1):
        other = frame.copy()
        other.positions += -other.positions.mean(0) + np.array([(k % 4) * 9.0, (k // 4) * 9.0, 0.0])
        atoms += other
    return atoms


def _rss_gib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def measure(family: str, dtype_name: str, size: int, method: str, repeats: int, device: str) -> dict:
    """One row, in this process."""
    import resource

    import torch

    import molsym
    from molsym.models.derivatives import hessian

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    config = {**FAMILIES[family], "elements": [1, 6, 7, 8], "cutoff": 4.5, "heads": HEAD}
    model = molsym.Potential.from_config(config).to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    atoms = system(size)
    graph = {k: v.to(device) for k, v in molsym.from_ase(atoms, model.cutoff, dtype).items()}
    if method == "autograd":
        def call():
            return hessian(model, graph, chunk_size=32)
    else:
        def call():
            with torch.no_grad():
                return model(graph, heads=("hessian",))["hessian"]
    baseline = _rss_gib()
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    call()
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - baseline
    else:
        peak = torch.cuda.max_memory_allocated() / 2**30
    return {"family": family, "dtype": dtype_name, "atoms": len(atoms), "method": method, "device": device,
            "seconds": statistics.median(times), "peak_gib": peak, "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 27, 108])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one row in this process
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(*json.loads(args.row))))
        return
    rows = []
    print("| family | dtype | atoms | autograd s | head s | speed-up | autograd peak GiB | head peak GiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for family in args.families:
        for dtype in args.dtypes:
            for size in args.sizes:
                pair = {}
                for method in ("autograd", "head"):
                    row = [family, dtype, size, method, args.repeats, args.device]
                    done = subprocess.run([sys.executable, __file__, "--row", json.dumps(row)], capture_output=True,
                                          text=True, check=True)
                    pair[method] = json.loads(done.stdout.strip().splitlines()[-1])
                    rows.append(pair[method])
                a, h = pair["autograd"], pair["head"]
                print(f"| {family} | {dtype} | {a['atoms']} | {a['seconds']:.3g} | {h['seconds']:.3g} | "
                      f"{a['seconds'] / h['seconds']:.0f}x | {a['peak_gib']:.2f} | {h['peak_gib']:.2f} |", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
