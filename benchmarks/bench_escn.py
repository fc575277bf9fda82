"""eSCN's SO(2) convolution against e3nn's tensor-product convolution with the same paths.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_escn.py --json benchmarks/results/escn_cpu.json

One convolution, forward and backward (gradients of features and per-edge weights): ~10k
directed edges (a batch of 3BPA frames), 16 channels, both parity classes in and out,
degrees L = 1..8, on CPU or (``--device cuda``) a GPU. Columns:
- so2 (mmax = L): ``molsym.nn.interactions.so2_conv.so2_convolution`` (channel-wise mixing,
  per-edge weights given in its layout), edge frames and Wigner-D
  blocks computed inside the timed call; equal to the e3nn column (tests/test_escn.py);
- so2 (mmax = 2): the same with orders |m| > 2 dropped in the edge frame (eSCN's truncation);
- e3nn: ``e3nn.o3.TensorProduct`` ("uvu", every O(3) path with l_out <= L and filter degrees
  0..2L, the paths the SO(2) convolution with mmax = L equals), spherical harmonics inside
  the timed call, then the same scatter. Skipped above ``--e3nn-max-l`` (its cost grows as
  L^6: at L = 6 one call takes tens of seconds).
Median of ``--repeats`` interleaved calls after ``--warmup``; the growth exponent is the
log-log slope of time against L over L >= 3.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from systems import bpa_frames  # noqa: E402

import molsym  # noqa: E402
from molsym.data.graph import to_device  # noqa: E402
from molsym.nn.geometry import GeometryBuilder  # noqa: E402
from molsym.nn.interactions.e3nn_conv import convolution_product  # noqa: E402
from molsym.nn.interactions.so2_conv import SO2Layout, so2_convolution  # noqa: E402
from molsym.nn.scatter import scatter_sum  # noqa: E402


def graph_of(frames: int):
    return molsym.collate([molsym.from_ase(a, 4.5) for a in bpa_frames(frames)])


def so2_call(graph, lmax, mmax, channels, dtype):
    device = graph["positions"].device
    builder = GeometryBuilder(4.5, 8).to(device=device, dtype=dtype)
    positions = graph["positions"].to(dtype)
    layout = SO2Layout(lmax, lmax, mmax)
    n = positions.shape[0]
    h = torch.randn(n, 2, (lmax + 1) ** 2, channels, dtype=dtype, device=device, requires_grad=True)
    probe = builder({**graph, "positions": positions})
    d = probe.directed_index.shape[1]
    weights = [torch.randn(d, *shape, dtype=dtype, device=device, requires_grad=True)
               for shape in layout.mixing_shapes(2, 2, channels)]

    def call():
        geometry = builder({**graph, "positions": positions})
        out = so2_convolution(h, weights, geometry, layout, 2, 1.0)
        out.square().sum().backward()
        return out

    return call, d


def e3nn_call(graph, lmax, channels, dtype):
    from e3nn import o3

    blocks = [(s, l) for s in range(2) for l in range(lmax + 1)]
    irreps_in = o3.Irreps([(channels, (l, (-1) ** (l + s))) for s, l in blocks])
    sh = o3.Irreps.spherical_harmonics(2 * lmax)
    device = graph["positions"].device
    tp = convolution_product(irreps_in, sh, lmax, "all").to(device=device, dtype=dtype)
    builder = GeometryBuilder(4.5, 8).to(device=device, dtype=dtype)
    positions = graph["positions"].to(dtype)
    n = positions.shape[0]
    x = torch.randn(n, irreps_in.dim, dtype=dtype, device=device, requires_grad=True)
    geometry = builder({**graph, "positions": positions})
    e = geometry.edge_index.shape[1]
    weights = torch.randn(e, tp.weight_numel, dtype=dtype, device=device, requires_grad=True)

    def call():
        g = builder({**graph, "positions": positions})
        i, j = g.edge_index
        y = o3.spherical_harmonics(sh, g.unit, normalize=False, normalization="component")
        messages = tp(x.index_select(0, j), y, weights)
        out = scatter_sum(messages, i, n)
        out.square().sum().backward()
        return out

    return call, e, len(tp.instructions)


def synchronize() -> None:
    """Wait for queued GPU work (a no-op on CPU), so that wall-clock intervals measure it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_ms(call, repeats, warmup) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def timed(make, repeats, warmup):
    """(median ms of a call, seconds to build it): ``make()`` returns the call to time."""
    start = time.perf_counter()
    call = make()
    setup = time.perf_counter() - start
    return median_ms(call, repeats, warmup), setup


def device_name(device: str) -> str:
    """What ran the benchmark: "cpu" or the GPU's name."""
    return torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu"


def slope(ls, ms) -> float | None:
    points = [(math.log(l), math.log(t)) for l, t in zip(ls, ms) if l >= 3 and t]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=list(range(1, 9)))
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--frames", type=int, default=27, help="3BPA frames in the batch (27: ~10k edges)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--e3nn-max-l", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    graph = to_device(graph_of(args.frames), device=args.device, dtype=dtype)
    rows = []
    print(f"load average {os.getloadavg()}")
    print("| L | so2 mmax=L ms | so2 mmax=2 ms | e3nn ms | e3nn paths | e3nn / so2 (mmax=L) | e3nn / so2 (mmax=2) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for lmax in args.lmax:
        full, edges = so2_call(graph, lmax, lmax, args.channels, dtype)
        row = {"lmax": lmax, "edges": edges, "so2_full_ms": median_ms(full, args.repeats, args.warmup)}
        truncated, _ = so2_call(graph, lmax, min(2, lmax), args.channels, dtype)
        row["so2_mmax2_ms"] = median_ms(truncated, args.repeats, args.warmup)
        if lmax <= args.e3nn_max_l:
            call, _, paths = e3nn_call(graph, lmax, args.channels, dtype)
            row["e3nn_ms"] = median_ms(call, max(1, min(args.repeats, 3)), 1)
            row["e3nn_paths"] = paths
        rows.append(row)
        e3 = row.get("e3nn_ms")
        e3nn_cells = ["", "", "", ""] if e3 is None else [
            f"{e3:.1f}", str(row["e3nn_paths"]), f"{e3 / row['so2_full_ms']:.1f}", f"{e3 / row['so2_mmax2_ms']:.1f}"]
        print(f"| {lmax} | {row['so2_full_ms']:.1f} | {row['so2_mmax2_ms']:.1f} | " + " | ".join(e3nn_cells) + " |",
              flush=True)
        ls = [r["lmax"] for r in rows]
        exponents = {key: slope(ls, [r.get(key) for r in rows]) for key in ("so2_full_ms", "so2_mmax2_ms", "e3nn_ms")}
        if args.json:  # after every row: a run stopped early keeps what it measured
            write_json(args.json, {"channels": args.channels, "dtype": args.dtype, "threads": args.threads,
                       "device": device_name(args.device), "torch": torch.__version__,
                       "frames": args.frames, "load_average_end": os.getloadavg(),
                       "rows": rows, "exponents": exponents})
    print("growth exponents (L >= 3):", {k: (None if v is None else round(v, 2)) for k, v in exponents.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
