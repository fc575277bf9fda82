"""One eSCN message step, molsym against fairchem's SO2_Convolution (UMA).

    make bench-escn-fairchem      # builds fairchem-venv, then runs this with it

On the same directed edges (a batch of 3BPA frames), same lmax, mmax, channels C (in and out)
and radial basis, forward and backward (gradients of the node features and of every
parameter), one step each, interleaved call by call:
- fairchem: node features gathered to the edges, rotated into the edge frames by one batched
  matmul with the reduced Wigner-D matrix (order-major, as fairchem does), its
  ``SO2_Convolution`` (radial MLP inside, shared channel mixing, SO(3): one parity class),
  rotated back by the transpose, summed onto receivers; "fairchem 2C out": the same with
  2C output channels, the size of molsym's output (two parity classes of C);
- molsym channelwise / shared: ``so2_convolution`` / ``so2_convolution_shared`` of
  ``molsym.nn.interactions.so2_conv`` with the eSCN layer's radial MLP, one parity class in and both
  out (O(3): the class-switching B blocks make pseudotensors, so the output is twice
  fairchem's). The edge frames (the Wigner-D rows as one padded matrix per edge for fairchem;
  molsym's per class and degree group) are computed once, outside the timed step, for both.
fairchem is imported from fairchem-venv (``pip install --no-deps fairchem-core``); only its
``so2_layers`` and ``radial`` modules are loaded, by path (``--fairchem-dir``: the folder holding
``so2_layers.py``, ``radial.py`` and ``matmul.py``, where fairchem is not installed). ``--device cuda``
runs it on a GPU (each timed call between two synchronisations).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_escn import device_name, synchronize, write_json  # noqa: E402
from systems import bpa_frames  # noqa: E402

import molsym  # noqa: E402
from molsym.data.graph import to_device  # noqa: E402
from molsym.nn.forms import FeatureForm  # noqa: E402
from molsym.nn.geometry import GeometryBuilder  # noqa: E402
from molsym.nn.interactions.escn import ESCNConvolution, ESCNSettings  # noqa: E402
from molsym.nn.interactions.so2_conv import so2_convolution, so2_convolution_shared  # noqa: E402
from molsym.nn.interactions.so2_frames import SO2Layout, class_rotations, frame_rotation  # noqa: E402
from molsym.nn.scatter import scatter_sum  # noqa: E402


def fairchem_so2_layers(folder: Path | None = None):
    """fairchem's uma/nn/so2_layers module, loaded by path (its package __init__ pulls the whole stack)."""
    if folder is None:
        spec = importlib.util.find_spec("fairchem")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("fairchem is not importable: run with fairchem-venv/bin/python (make bench-escn-fairchem)"
                             " or give --fairchem-dir")
        folder = Path(list(spec.submodule_search_locations)[0]) / "core" / "models" / "uma" / "nn"
    package = types.ModuleType("fairchem_uma_nn")
    package.__path__ = [str(folder)]
    sys.modules["fairchem_uma_nn"] = package
    for name in ("matmul", "radial", "so2_layers"):
        module_spec = importlib.util.spec_from_file_location(f"fairchem_uma_nn.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
    return sys.modules["fairchem_uma_nn.so2_layers"]


def steps(graph, lmax, mmax, channels, num_radial, hidden, dtype, fairchem_dir=None):
    device = graph["positions"].device
    builder = GeometryBuilder(4.5, num_radial, frame_lmax=lmax).to(device=device, dtype=dtype)
    with torch.no_grad():  # fixed positions: no gradients into the geometry
        geometry = builder(graph)
        frame_rotation(geometry, lmax, min(mmax, lmax))
        for side, parity in ((0, 0), (1, 0), (1, 1)):  # molsym's (class 1 in G-form rows; degree groups)
            class_rotations(geometry, SO2Layout(lmax, lmax, mmax), side, parity, 1)
    i, j = geometry.directed_index
    n = graph["positions"].shape[0]
    gen = torch.Generator(device=device).manual_seed(lmax * 10 + mmax)
    x = torch.randn(n, (lmax + 1) ** 2, channels, generator=gen, dtype=dtype, device=device, requires_grad=True)
    h = x.detach().unsqueeze(1).requires_grad_(True)  # (N, 1, (L+1)^2, C)
    form = FeatureForm.spherical(channels, lmax, 1)
    calls = {}
    for mixing in ("channelwise", "shared"):
        settings = ESCNSettings(channels=channels, lmax=lmax, mmax=mmax, num_radial=num_radial,
                                radial_hidden=hidden, avg_num_neighbors=1.0, mixing=mixing)
        layer = ESCNConvolution(settings, form).to(device=device, dtype=dtype)

        def call(layer=layer, mixing=mixing):
            weights = layer.edge_weights(geometry)
            if mixing == "shared":
                out = so2_convolution_shared(h, weights, list(layer.so2_matrices), geometry, layer.layout, 2, 1.0)
            else:
                out = so2_convolution(h, weights, geometry, layer.layout, 2, 1.0)
            out.square().sum().backward()

        calls[f"molsym_{mixing}"] = call
    so2 = fairchem_so2_layers(fairchem_dir)
    mapping = types.SimpleNamespace(m_size=[lmax + 1 - m for m in range(mmax + 1)])
    wigner = frame_rotation(geometry, lmax, min(mmax, lmax))  # (D, K, (L+1)^2), fairchem's row order
    wigner_inv = wigner.transpose(1, 2).contiguous()
    radial = geometry.directed(geometry.pair_radial[:, :num_radial] * geometry.pair_envelope.unsqueeze(-1))
    for name, out_channels in (("fairchem", channels), ("fairchem_2c", 2 * channels)):
        conv = so2.SO2_Convolution(channels, out_channels, lmax, mmax, mapping, internal_weights=False,
                                   edge_channels_list=[num_radial, hidden]).to(device=device, dtype=dtype)

        def fairchem_call(conv=conv):
            edge = torch.bmm(wigner, x.index_select(0, j))  # (D, K, C)
            out = torch.bmm(wigner_inv, conv(edge, radial))  # (D, (L+1)^2, C out)
            scatter_sum(out, i, n).square().sum().backward()

        calls[name] = fairchem_call
    return calls, int(i.shape[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2:2,4:2,6:2,2:1,4:4,6:6", help="lmax:mmax pairs")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--num-radial", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--frames", type=int, default=27, help="3BPA frames in the batch (27: ~10k directed edges)")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--fairchem-dir", type=Path, help="folder of fairchem's so2_layers.py, radial.py, matmul.py")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    graph = to_device(molsym.collate([molsym.from_ase(a, 4.5) for a in bpa_frames(args.frames)]),
                      device=args.device, dtype=dtype)
    rows = []
    print(f"load average {os.getloadavg()}")
    print("| lmax | mmax | edges | fairchem ms | fairchem 2C out ms | molsym channelwise ms | molsym shared ms "
          "| fairchem / channelwise | fairchem / shared | fairchem 2C / shared |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for pair in args.rows.split(","):
        lmax, mmax = (int(v) for v in pair.split(":"))
        calls, edges = steps(graph, lmax, mmax, args.channels, args.num_radial, args.hidden, dtype, args.fairchem_dir)
        for call in calls.values():
            call()  # warm-up
        times = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                synchronize()
                start = time.perf_counter()
                call()
                synchronize()
                times[name].append(time.perf_counter() - start)
        row = {"lmax": lmax, "mmax": mmax, "edges": edges}
        row.update({f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()})
        rows.append(row)
        f = row["fairchem_ms"]
        f2, shared = row["fairchem_2c_ms"], row["molsym_shared_ms"]
        print(f"| {lmax} | {mmax} | {edges} | {f:.1f} | {f2:.1f} | {row['molsym_channelwise_ms']:.1f} | "
              f"{shared:.1f} | {f / row['molsym_channelwise_ms']:.2f} | {f / shared:.2f} | {f2 / shared:.2f} |",
              flush=True)
    if args.json:
        write_json(args.json, {"channels": args.channels, "dtype": args.dtype, "threads": args.threads,
                   "device": device_name(args.device),
                   "hidden": args.hidden, "num_radial": args.num_radial,
                   "load_average_end": os.getloadavg(), "torch": torch.__version__,
                   "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
