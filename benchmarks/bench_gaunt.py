"""The Gaunt tensor product against e3nn's tensor product and the dense Gaunt contraction.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gaunt.py \
        --json benchmarks/results/gaunt_cpu.json

The product alone, forward and backward (gradients of both operands), a batch of ``--batch``
pairs of C-channel functions of degree L, full output (degrees 0..2L, the paths with
l1 + l2 + l3 even: those a Gaunt product has). Columns:
- grid, fft: ``molsym.nn.gaunt_product.GauntTensorProduct(L, L, 2L, C, "even", backend)``
  (per-degree weights included);
- e3nn: C = 1 ``o3.FullTensorProduct`` with ``filter_ir_out`` the even-path outputs
  (0e, 1o, 2e, ...); C > 1 the same paths channel-wise ("uuu", no weights); skipped above
  ``--e3nn-max-l`` and once one call takes over ``--e3nn-max-s`` seconds (its cost grows as L^6);
- dense: the contraction with the cached Gaunt table, c = (x1 ⊗ x2) G, as one matrix product
  per chunk of 1,000 pairs (``molsym.o3.gaunt``); skipped above ``--dense-max-l``
  (``--dense-max-l-16`` with more than one channel).
With more than one channel L stops at ``--max-l-16`` (at L = 10 and 16 channels the fft
backend's values alone take ~0.6 GB per tensor).
Median of ``--repeats`` calls after ``--warmup``; the growth exponent is the log-log slope of
time against L over L >= 3. Absolute times depend on the machine's load (recorded).
``--paired L ...`` measures only fft/grid, as the median ratio of back-to-back pairs of calls
(robust to load that drifts between the table's columns). ``--device cuda`` runs everything on
a GPU (each timed call between two synchronisations).
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

from bench_escn import device_name, slope, synchronize, timed, write_json  # noqa: E402

from molsym.nn.gaunt_product import GauntTensorProduct  # noqa: E402
from molsym.o3.gaunt import gaunt_coefficients  # noqa: E402


DEVICE = "cpu"  # set by main (--device)


def operands(batch: int, lmax: int, channels: int, dtype):
    d = (lmax + 1) ** 2
    x1 = torch.randn(batch, d, channels, dtype=dtype, device=DEVICE, requires_grad=True)
    x2 = torch.randn(batch, d, channels, dtype=dtype, device=DEVICE, requires_grad=True)
    return x1, x2


def gaunt_call(batch, lmax, channels, dtype, backend):
    tp = GauntTensorProduct(lmax, lmax, 2 * lmax, channels, "even", backend).to(device=DEVICE, dtype=dtype)
    x1, x2 = operands(batch, lmax, channels, dtype)

    def call():
        tp(x1, x2).square().sum().backward()

    return call


def e3nn_call(batch, lmax, channels, dtype):
    from e3nn import o3

    irreps = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
    outputs = [(l, (-1) ** l) for l in range(2 * lmax + 1)]
    if channels == 1:
        tp = o3.FullTensorProduct(irreps, irreps, filter_ir_out=outputs)
    else:
        instructions, irreps_out = [], []
        for i1, (_, ir1) in enumerate(irreps):
            for i2, (_, ir2) in enumerate(irreps):
                for ir3 in ir1 * ir2:
                    if (ir3.l, ir3.p) in outputs:
                        instructions.append((i1, i2, len(irreps_out), "uuu", False))
                        irreps_out.append((channels, ir3))
        tp = o3.TensorProduct(irreps, irreps, o3.Irreps(irreps_out), instructions)
    tp = tp.to(device=DEVICE, dtype=dtype)
    x1 = torch.randn(batch, irreps.dim, dtype=dtype, device=DEVICE, requires_grad=True)
    x2 = torch.randn(batch, irreps.dim, dtype=dtype, device=DEVICE, requires_grad=True)

    def call():
        tp(x1, x2).square().sum().backward()

    return call


def dense_call(batch, lmax, channels, dtype, chunk=1000):
    table = gaunt_coefficients(lmax, lmax, 2 * lmax).to(device=DEVICE, dtype=dtype).flatten(0, 1)  # (D1 D2, D3)
    x1, x2 = operands(batch, lmax, channels, dtype)

    def call():
        pieces = []
        for a, b in zip(x1.split(chunk), x2.split(chunk)):
            outer = (a.transpose(1, 2).unsqueeze(-1) * b.transpose(1, 2).unsqueeze(-2)).flatten(-2)  # (B, C, D1 D2)
            pieces.append(outer @ table)
        torch.cat(pieces).square().sum().backward()

    return call


def paired_ratio(first, second, repeats: int) -> float:
    """Median over ``repeats`` back-to-back pairs of time(second) / time(first) (after one warm-up
    call each): robust to load that drifts on the scale of seconds."""
    first(), second()
    ratios = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        first()
        synchronize()
        middle = time.perf_counter()
        second()
        synchronize()
        ratios.append((time.perf_counter() - middle) / (middle - start))
    return statistics.median(ratios)



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-l-16", type=int, default=8, help="largest L with more than one channel (memory)")
    parser.add_argument("--batch", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--e3nn-max-l", type=int, default=8)
    parser.add_argument("--e3nn-max-s", type=float, default=20.0)
    parser.add_argument("--dense-max-l", type=int, default=8)
    parser.add_argument("--dense-max-l-16", type=int, default=6, help="the same with more than one channel")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--paired", type=int, nargs="*", default=[],
                        help="only measure fft/grid by back-to-back pairs at these L (no table)")
    parser.add_argument("--chunk-values", type=int, default=None,
                        help="GauntTensorProduct.CHUNK_VALUES for this run (a huge value: one pass)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if args.chunk_values is not None:
        GauntTensorProduct.CHUNK_VALUES = args.chunk_values
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    if args.paired:
        return paired_main(args, dtype)
    results = {"batch": args.batch, "dtype": args.dtype, "threads": args.threads, "torch": torch.__version__,
               "device": device_name(args.device), "chunk_values": GauntTensorProduct.CHUNK_VALUES,
               "loadavg_start": os.getloadavg(), "tables": {}}
    for channels in args.channels:
        rows, e3nn_open, exponents = [], True, {}
        print(f"\nC = {channels}\n| L | grid ms | fft ms | e3nn ms | dense ms | fft/grid | e3nn/grid | dense/grid |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for lmax in args.lmax:
            if channels > 1 and lmax > args.max_l_16:
                continue
            row = {"lmax": lmax, "loadavg": os.getloadavg()[0]}
            row["grid_ms"], _ = timed(lambda: gaunt_call(args.batch, lmax, channels, dtype, "grid"),
                                      args.repeats, args.warmup)
            row["fft_ms"], _ = timed(lambda: gaunt_call(args.batch, lmax, channels, dtype, "fft"),
                                     args.repeats, args.warmup)
            if e3nn_open and lmax <= args.e3nn_max_l:
                row["e3nn_ms"], row["e3nn_setup_s"] = timed(lambda: e3nn_call(args.batch, lmax, channels, dtype),
                                                            max(1, min(args.repeats, 2)), 1)
                e3nn_open = row["e3nn_ms"] < 1e3 * args.e3nn_max_s
            if lmax <= (args.dense_max_l if channels == 1 else args.dense_max_l_16):
                row["dense_ms"], _ = timed(lambda: dense_call(args.batch, lmax, channels, dtype),
                                           max(1, min(args.repeats, 2)), 1)
            rows.append(row)
            cells = [f"{row[k]:.1f}" if k in row else "" for k in ("grid_ms", "fft_ms", "e3nn_ms", "dense_ms")]
            ratios = [f"{row[k] / row['grid_ms']:.1f}" if k in row else "" for k in ("fft_ms", "e3nn_ms", "dense_ms")]
            print(f"| {lmax} | " + " | ".join(cells + ratios) + " |", flush=True)
            ls = [r["lmax"] for r in rows]
            exponents = {k: slope(ls, [r.get(k) for r in rows]) for k in ("grid_ms", "fft_ms", "e3nn_ms", "dense_ms")}
            results["tables"][str(channels)] = {"rows": rows, "exponents": exponents}
            results["loadavg_end"] = os.getloadavg()
            if args.json:  # after every row: a run stopped early keeps what it measured
                write_json(args.json, results)
        print("growth exponents (L >= 3):", {k: (None if v is None else round(v, 2)) for k, v in exponents.items()})
    return 0


def paired_main(args, dtype) -> int:
    """fft/grid time ratios from back-to-back pairs (``--paired L ...``), per channel count."""
    results = {"batch": args.batch, "dtype": args.dtype, "threads": args.threads, "repeats": args.repeats,
               "loadavg_start": os.getloadavg(), "paired_fft_over_grid": {}}
    for channels in args.channels:
        for lmax in args.paired:
            grid = gaunt_call(args.batch, lmax, channels, dtype, "grid")
            fft = gaunt_call(args.batch, lmax, channels, dtype, "fft")
            ratio = paired_ratio(grid, fft, args.repeats)
            results["paired_fft_over_grid"][f"C={channels} L={lmax}"] = ratio
            print(f"C = {channels}, L = {lmax}: fft / grid = {ratio:.2f} (median of {args.repeats} pairs)", flush=True)
    results["loadavg_end"] = os.getloadavg()
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
