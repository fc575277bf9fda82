"""Hessians: the HIP head (one forward pass) vs the exact autograd Hessian (vmap over rows).

Run from the repository root:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_hessian.py [--sizes 10 27 100 300] [--device cpu]

Systems (deterministic): acetone (10 atoms, ``ase.build.molecule("CH3COCH3")``), the 27-atom
3BPA molecule (first frame of 3BPA train_300K.xyz), and N > 27 atoms: ceil(N / 27) copies of
3BPA (frames 0, 1, ...) on a grid 9 Å apart, the last copy cut to the first atoms of its frame
so that there are exactly N (100 = 3 copies + 19 atoms, 300 = 11 copies + 3 atoms). Models,
random weights (seed 0), frozen: TensorNet (128 channels, 2 layers), e3nn (32 channels, lmax 2,
2 layers), eSCN (32 channels, lmax 2, mmax 2, 2 layers) and Gaunt (32 channels, lmax 2,
correlation 3, 2 layers), all cutoff 4.5 Å, each with a Hessian head (16 channels, cutoff 4.5 Å).

On CPU each (family, dtype, system, method) runs in a fresh process so that its peak memory is its own:
the model and graph are built, one call warms up (``--no-autograd-warmup``: none for the autograd rows),
then ``--repeats`` calls are timed (median).
Columns: seconds per Hessian; peak memory: the process's maximum resident set minus the
resident set after building the model (CPU), or ``torch.cuda.max_memory_allocated`` minus what was
allocated after building it (CUDA, where the rows share one process: the allocator's peak is reset per row).
``autograd`` is ``molsym.models.derivatives.hessian`` (vector-Hessian products batched by vmap,
``--chunk`` rows per batched backward pass, 32 by default); ``head`` is ``model(graph, heads=("hessian",))`` under
``torch.no_grad``.

``--autograd-chunks K`` (for large N, where one exact Hessian takes many minutes on CPU): the
autograd call is timed in its two parts, the forward pass with the gradient's graph and K of
the ceil(3N / 32) batched backward passes, and its time is reported as
forward + (K passes) x ceil(3N / 32) / K; every pass has the same graph and 32 rows (the last
one fewer, so this is an upper bound), so the estimate is the full call's time up to noise. The
row says ``"extrapolated": true`` and how many passes were timed; its peak memory is measured
(memory does not grow with the number of passes).
"""
from __future__ import annotations

import argparse
import json
import os
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
    "escn": {"family": "escn", "channels": 32, "layers": 2, "lmax": 2, "mmax": 2},
    "gaunt": {"family": "gaunt", "channels": 32, "layers": 2, "lmax": 2, "correlation": 3},
}
CHUNK = 32
HEAD = {"hessian": {"channels": 16}}


def system(size: int):
    import numpy as np
    from ase.build import molecule

    from systems import bpa_frames

    if size == 10:
        return molecule("CH3COCH3")
    if size < 27:
        raise ValueError(f"sizes are 10 or at least 27 (copies of 3BPA), got {size}")
    frames = bpa_frames(-(-size // 27))
    atoms = frames[0].copy()
    atoms.positions -= atoms.positions.mean(0)
    for k, frame in enumerate(frames[1:], start=1):
        other = frame.copy()
        other.positions += -other.positions.mean(0) + np.array([(k % 4) * 9.0, (k // 4) * 9.0, 0.0])
        atoms += other
    return atoms[:size]


def _rss_gib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _sync(device: str) -> None:
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


def autograd_parts(model, graph, chunks: int, device: str, rows: int = CHUNK) -> tuple[float, float, int]:
    """(seconds of the forward pass with the gradient's graph, seconds of ``chunks`` batched backward
    passes of ``rows`` rows, total passes of a full Hessian): the steps of
    ``molsym.models.derivatives.hessian``, timed separately."""
    import torch

    from molsym.data import keys as K

    _sync(device)
    start = time.perf_counter()
    positions = graph[K.POSITIONS].detach().requires_grad_(True)
    energy = model({**graph, K.POSITIONS: positions})[K.ENERGY].sum()
    (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
    gradient = gradient.reshape(-1)
    _sync(device)
    forward = time.perf_counter() - start
    n3 = gradient.numel()
    eye = torch.eye(n3, dtype=gradient.dtype, device=gradient.device)
    result = positions.new_zeros(n3, n3)
    start = time.perf_counter()
    for first in range(0, chunks * rows, rows):
        (block,) = torch.autograd.grad(gradient, positions, grad_outputs=eye[first:first + rows], retain_graph=True,
                                       is_grads_batched=True)
        result[first:first + rows] = block.reshape(rows, n3)
    _sync(device)
    return forward, time.perf_counter() - start, -(-n3 // rows)


def measure(family: str, dtype_name: str, size: int, method: str, repeats: int, device: str,
            autograd_chunks: int = 0, autograd_warmup: bool = True, rows: int = CHUNK) -> dict:
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
    extrapolated = method == "autograd" and 0 < autograd_chunks < -(-3 * len(atoms) // rows)
    if extrapolated:
        parts = []

        def call():
            forward, passes, total = autograd_parts(model, graph, autograd_chunks, device, rows)
            parts.append((forward, passes))
            return forward + passes * total / autograd_chunks
    elif method == "autograd":
        def call():
            return hessian(model, graph, chunk_size=rows)
    else:
        def call():
            with torch.no_grad():
                return model(graph, heads=("hessian",))["hessian"]
    baseline = _rss_gib()
    if device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**30
    warmup = method == "head" or autograd_warmup
    if warmup:
        call()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        value = call()
        _sync(device)
        times.append(value if extrapolated else time.perf_counter() - start)
    if device == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - baseline
    else:
        peak = torch.cuda.max_memory_allocated() / 2**30 - baseline
    return {"family": family, "dtype": dtype_name, "atoms": len(atoms), "method": method, "device": device,
            "seconds": statistics.median(times), "peak_gib": peak, "repeats": repeats, "extrapolated": extrapolated,
            "timed_passes": autograd_chunks if extrapolated else None, "chunk_rows": rows, "warmup": warmup, "loadavg": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 27, 100, 300])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--autograd-repeats", type=int, default=None,
                        help="repeats of the autograd rows (default --repeats)")
    parser.add_argument("--autograd-chunks", type=int, default=0,
                        help="time only this many batched backward passes of an autograd Hessian and extrapolate "
                             "(0: the full call)")
    parser.add_argument("--no-autograd-warmup", action="store_true",
                        help="time the first autograd call (for rows that take minutes: one-time costs are then "
                             "a negligible part)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="Hessian rows per batched backward pass")
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
                    repeats = args.autograd_repeats or args.repeats if method == "autograd" else args.repeats
                    row = [family, dtype, size, method, repeats, args.device, args.autograd_chunks,
                           not args.no_autograd_warmup, args.chunk]
                    if args.device == "cpu":  # a process per row: the resident set's peak is the row's own
                        done = subprocess.run([sys.executable, __file__, "--row", json.dumps(row)],
                                              capture_output=True, text=True, check=True)
                        pair[method] = json.loads(done.stdout.strip().splitlines()[-1])
                    else:  # the allocator's peak is reset per row
                        pair[method] = measure(*row)
                    rows.append(pair[method])
                a, h = pair["autograd"], pair["head"]
                mark = "*" if a["extrapolated"] else ""
                print(f"| {family} | {dtype} | {a['atoms']} | {a['seconds']:.3g}{mark} | {h['seconds']:.3g} | "
                      f"{a['seconds'] / h['seconds']:.0f}x | {a['peak_gib']:.2f} | {h['peak_gib']:.2f} |", flush=True)
                if args.output:  # after every pair, atomically: a long run keeps what it measured
                    tmp = Path(args.output + ".tmp")
                    tmp.write_text(json.dumps(rows, indent=1) + "\n")
                    tmp.replace(args.output)


if __name__ == "__main__":
    main()
