"""The SO(2) convolution before and after its batched-matmul form, in one run, on CPU.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_escn_before_after.py \
        --json benchmarks/results/escn_before_after.json

"before" is ``so2_convolution`` of molsym/nn/interactions/escn.py at commit 39f2111 (read with
``git show``, so this needs the repository's history), "after" the current
``molsym.nn.interactions.so2_conv.so2_convolution``; forward and backward, ~10k directed edges
(27 3BPA frames), 16 channels, both parity classes, float32, one thread, per-edge weights as
leaves in each version's layout; median of ``--repeats`` interleaved calls after a warm-up.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_escn import graph_of, write_json  # noqa: E402

import molsym.nn.interactions.so2_conv as after  # noqa: E402
from molsym.data.graph import to_device  # noqa: E402
from molsym.nn.geometry import GeometryBuilder  # noqa: E402

BEFORE = "39f2111"


def load_before():
    source = subprocess.run(["git", "show", f"{BEFORE}:molsym/nn/interactions/escn.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp())
    (folder / "escn_before.py").write_text(source)
    spec = importlib.util.spec_from_file_location("escn_before", folder / "escn_before.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["escn_before"] = module
    spec.loader.exec_module(module)
    return module


def call_of(module, graph, lmax, mmax, channels, new_layout):
    builder = GeometryBuilder(4.5, 8)
    layout = module.SO2Layout(lmax, lmax, mmax)
    n = graph["positions"].shape[0]
    h = torch.randn(n, 2, (lmax + 1) ** 2, channels, requires_grad=True)
    d = builder(graph).directed_index.shape[1]
    shapes = layout.mixing_shapes(2, 2, channels) if new_layout else layout.weight_shapes(2, channels)
    weights = [torch.randn(d, *shape, requires_grad=True) for shape in shapes]

    def call():
        out = module.so2_convolution(h, weights, builder(graph), layout, 2, 1.0)
        out.square().sum().backward()

    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2:2,4:2,6:2,6:6,8:2,8:8", help="lmax:mmax pairs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    before = load_before()
    graph = to_device(graph_of(27), dtype=torch.float32)
    rows = []
    print(f"load average {os.getloadavg()}")
    print("| lmax | mmax | before ms | after ms | speed-up |\n| ---: | ---: | ---: | ---: | ---: |")
    for pair in args.rows.split(","):
        lmax, mmax = (int(v) for v in pair.split(":"))
        torch.manual_seed(0)
        calls = {"before": call_of(before, graph, lmax, mmax, 16, False),
                 "after": call_of(after, graph, lmax, mmax, 16, True)}
        times = {name: [] for name in calls}
        for call in calls.values():
            call()
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        med = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        rows.append({"lmax": lmax, "mmax": mmax, "before_ms": med["before"], "after_ms": med["after"],
                     "speedup": med["before"] / med["after"]})
        print(f"| {lmax} | {mmax} | {med['before']:.0f} | {med['after']:.0f} | {med['before'] / med['after']:.2f} |",
              flush=True)
    if args.json:
        write_json(args.json, {"before_commit": BEFORE, "channels": 16, "dtype": "float32", "threads": 1,
                   "load_average_end": os.getloadavg(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
