"""The Gaunt product basis (body order 4) against chained e3nn tensor products and MACE's symmetric
contraction, on CPU.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 mace-venv/bin/python benchmarks/bench_gaunt_basis.py \
        --json benchmarks/results/gaunt_basis_cpu.json          # make bench-gaunt-mace

The many-body self-interaction of one layer alone, forward and backward (the gradient of
Σ out² with respect to the input features only, as for forces; no parameter gradients), on a
batch of ``--nodes`` nodes with C channels of degrees 0..L (``--channels``, ``--lmax``),
correlation 3 (``--correlation``: body order correlation + 1 = 4). Input and output irreps
are those of MACE's product basis, C x (0e + 1o + 2e + ... up to L), natural parity. Columns:

- grid, fft: ``molsym.nn.interactions.gaunt.ProductBasis`` with the form a Gaunt layer gives it
  (``gaunt_output_form``: both parity classes), on each backend, in eval mode (evaluation, as
  for forces: on CPU the grid column runs the fused kernel of ``molsym.o3.grid_products``,
  which the module skips in training mode). It computes
  B = Proj_L (a_1 + a_1 a_2 + a_1 a_2 a_3), a_k = Linear_k(x) (one C x C matrix per degree,
  3 (L+1) C² weights), the products pointwise on a sphere grid: every coupling path with
  l1 + l2 + l3 even, channel-wise, the intermediate a_1 a_2 kept at its full degree 2L,
  no weights per path. Its second parity class (a linear map only, C x C per degree) is
  timed with it, work that neither peer does: it can only lower the ratios.
- e3nn: the same function by chained ``o3.TensorProduct``s, a_k = ``o3.Linear``,
  A_2 = TP(a_1, a_2) onto degrees 0..2L, A_3 = TP(A_2, a_3) onto 0..L, out = a_1 + A_2[0..L] + A_3;
  channel-wise ("uuu") paths l1 x l2 -> l3 with l1 + l2 + l3 even only (those a Gaunt product
  has; with natural-parity inputs these are all the natural-parity outputs, odd paths would
  give pseudotensors), no weights per path, each path scaled by its Gaunt coefficient's factor
  (path_weight) so that with the same linear weights the output equals the grid column's
  (checked before timing, in float64).
- mace: ``mace.modules.symmetric_contraction.SymmetricContraction`` (what MACE's
  ``EquivariantProductBasisBlock`` wraps, without the linear after it: the Gaunt layer's own
  linear after the product basis is not timed either), one element, irreps in and out
  C x (0e + 1o + ... up to L), the same correlation. It computes Σ_ν<=3 of every equivariant
  symmetric contraction of ν copies of x onto each output irrep (generalised Clebsch-Gordan
  U matrices, all intermediate couplings), with learned weights per path and channel: a
  larger function space than the Gaunt product's, with the same body order, input and output.
  MACE is imported only where it is installed (mace-venv, ``make bench-gaunt-mace``; it pins
  e3nn 0.4.4), otherwise this column is skipped with a note. At L = 4 and correlation 3 MACE's
  own route to its U matrices (e3nn 0.4.4's tabulated 3j symbols, every intermediate degree up
  to 3L) is not implemented; MACE then builds them with ``cuequivariance`` (the pure-Python
  package, installed beside it; the U matrices only, the contraction stays MACE's).

Checks before timing: the e3nn chain equals the grid column's class-0 output (same weights),
fft equals grid, the output irreps and shapes of all columns agree, and each column is a
polynomial of degree exactly ``correlation`` in its input (4th finite difference of
t -> f(t x) zero, 3rd not: body order correlation + 1).
Median of ``--repeats`` calls after ``--warmup``, one column after the other in the same run;
ratios are peer time / Gaunt time. Absolute times depend on the machine's load (recorded).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore", message="The TorchScript type system")  # e3nn 0.4.4 scripting its modules

# mace first: importing it lets e3nn 0.4.4 (its pin) load its own constants under torch >= 2.6
try:
    from mace.modules.symmetric_contraction import SymmetricContraction
except ImportError:  # mace-torch lives in mace-venv only
    SymmetricContraction = None

from bench_escn import device_name, timed, write_json  # noqa: E402

import e3nn  # noqa: E402
from e3nn import o3  # noqa: E402

from molsym.nn.forms import FeatureForm  # noqa: E402
from molsym.nn.interactions.gaunt import GauntSettings, ProductBasis, gaunt_output_form  # noqa: E402
from molsym.o3.gaunt import gaunt_coefficients  # noqa: E402


def natural_irreps(channels: int, lmax: int) -> o3.Irreps:
    """C x (0e + 1o + 2e + ...) up to lmax, one entry per degree (index = l)."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def to_e3nn(x: torch.Tensor) -> torch.Tensor:
    """molsym's (N, D, C) component-major coefficients -> e3nn's (N, Σ_l C (2l+1)), channel-major
    within each degree."""
    lmax = math.isqrt(x.shape[1]) - 1
    return torch.cat([x[:, l * l:(l + 1) ** 2].transpose(1, 2).flatten(1) for l in range(lmax + 1)], dim=1)


def gaunt_path_factor(l1: int, l2: int, l3: int, table: torch.Tensor) -> float:
    """c with (1/4π) ∫ Y_l1 Y_l2 Y_l3 dΩ = c W (component-normalised Y, W e3nn's unit-norm
    wigner_3j): the Gaunt product's coupling on this path. ``table`` is the integral-normalised
    Gaunt table of ``molsym.o3.gaunt``, whose component form is √(4π) times it."""
    block = math.sqrt(4 * math.pi) * table[l1 * l1:(l1 + 1) ** 2, l2 * l2:(l2 + 1) ** 2, l3 * l3:(l3 + 1) ** 2]
    w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    c = float((block * w3j).sum())
    if not c > 0 or (block - c * w3j).abs().max() > 1e-10:
        raise AssertionError(f"Gaunt block ({l1}, {l2}, {l3}) is not a positive multiple of wigner_3j")
    return c


def gaunt_paths_tp(channels: int, lmax1: int, lmax2: int, lmax_out: int) -> o3.TensorProduct:
    """Channel-wise ("uuu") tensor product C x (0e + 1o + ..) up to lmax1 and lmax2 -> up to lmax_out,
    the paths with l1 + l2 + l3 even, each weighted by its Gaunt factor: the product of two
    functions projected on degrees <= lmax_out. e3nn scales a path by √(path_weight) when
    both normalisations are "none", hence the square."""
    table = gaunt_coefficients(lmax1, lmax2, lmax_out)
    instructions = []
    for l1 in range(lmax1 + 1):
        for l2 in range(lmax2 + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, lmax_out) + 1):
                if (l1 + l2 + l3) % 2 == 0:
                    instructions.append((l1, l2, l3, "uuu", False, gaunt_path_factor(l1, l2, l3, table) ** 2))
    return o3.TensorProduct(natural_irreps(channels, lmax1), natural_irreps(channels, lmax2),
                            natural_irreps(channels, lmax_out), instructions,
                            irrep_normalization="none", path_normalization="none")


class ChainedTensorProducts(nn.Module):
    """The product basis of ``ProductBasis`` written with e3nn: a_k = Linear_k(x),
    out = Σ_ν<=correlation Proj_L (a_1 ... a_ν) by successive tensor products, the running
    product carried up to the degree that can still reach L. x (N, C (L+1)²) e3nn layout."""

    def __init__(self, channels: int, lmax: int, correlation: int):
        super().__init__()
        irreps = natural_irreps(channels, lmax)
        self.irreps_out = irreps
        self.dim = irreps.dim
        self.factors = nn.ModuleList(o3.Linear(irreps, irreps) for _ in range(correlation))
        self.products = nn.ModuleList()
        degree = lmax
        for nu in range(2, correlation + 1):
            reach = min(nu * lmax, lmax + (correlation - nu) * lmax)
            self.products.append(gaunt_paths_tp(channels, degree, lmax, reach))
            degree = reach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        term = self.factors[0](x)
        total = term
        for factor, product in zip(self.factors[1:], self.products):
            term = product(term, factor(x))
            total = total + term[:, :self.dim]
        return total

    def copy_weights(self, basis: ProductBasis) -> None:
        """Take the factor weights of a ``ProductBasis`` (o3.Linear divides by √C_in, so multiply)."""
        with torch.no_grad():
            for linear, channel_map in zip(self.factors, basis.factors):
                weight = channel_map.weight[0]  # (L+1, C_in, C_out)
                linear.weight.copy_((weight * math.sqrt(weight.shape[1])).flatten())


def product_basis(channels: int, lmax: int, correlation: int, backend: str) -> ProductBasis:
    """The product basis of a Gaunt layer with these settings whose input has degrees 0..lmax."""
    settings = GauntSettings(channels=channels, lmax=lmax, correlation=correlation, backend=backend)
    form = gaunt_output_form(settings, FeatureForm.spherical(channels, lmax))
    return ProductBasis(form, settings.correlation, settings.backend).eval()  # evaluation, as for forces


@contextlib.contextmanager
def default_dtype(dtype):
    """e3nn's wigner_3j buffers and MACE's U matrices are built in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def mace_contraction(channels: int, lmax: int, correlation: int, dtype):
    """MACE's symmetric contraction, one element, irreps in = out = C x (0e + 1o + ..) up to lmax."""
    with default_dtype(dtype):
        irreps = natural_irreps(channels, lmax)
        return SymmetricContraction(irreps, irreps, correlation, num_elements=1)


def polynomial_degree(f, x: torch.Tensor) -> tuple[float, float]:
    """(|Δ³|, |Δ⁴| / |Δ³|) of t -> f(t x) at t = 0, 1, ..: a polynomial of degree 3 without a
    constant has a nonzero third difference and a zero fourth."""
    with torch.no_grad():
        values = [f(k * x) for k in range(5)]
    third = sum((-1) ** (3 - k) * math.comb(3, k) * values[k] for k in range(4))
    fourth = sum((-1) ** (4 - k) * math.comb(4, k) * values[k] for k in range(5))
    scale = float(third.abs().max())
    return scale, float(fourth.abs().max()) / scale


@torch.no_grad()
def check(channels: int, lmax: int, correlation: int, backends, mace) -> dict:
    """Equalities and body orders in float64 on a few nodes (see the module docstring)."""
    torch.manual_seed(1)
    nodes, dtype = 4, torch.float64
    grid = product_basis(channels, lmax, correlation, "grid").to(dtype)
    assert len(grid.factors) + 1 == correlation + 1, "body order of the product basis"
    with default_dtype(dtype):
        chain = ChainedTensorProducts(channels, lmax, correlation)
    chain.copy_weights(grid)
    m = torch.randn(nodes, 2, (lmax + 1) ** 2, channels, dtype=dtype)
    out = to_e3nn(grid(m)[:, 0])
    result = {"e3nn_vs_grid": float((chain(to_e3nn(m[:, 0])) - out).abs().max() / out.abs().max())}
    assert result["e3nn_vs_grid"] < 1e-9, f"e3nn chain != Gaunt product basis: {result}"
    for backend in backends:
        if backend != "grid":
            other = product_basis(channels, lmax, correlation, backend).to(dtype)
            for mine, theirs in zip(other.factors, grid.factors):
                mine.weight.data.copy_(theirs.weight.data)
            if other.pseudo is not None:
                other.pseudo.weight.data.copy_(grid.pseudo.weight.data)
            result[f"{backend}_vs_grid"] = float((other(m) - grid(m)).abs().max() / grid(m).abs().max())
            assert result[f"{backend}_vs_grid"] < 1e-9, f"{backend} != grid: {result}"
    degrees = {"grid": lambda t: grid(t)[:, 0], "e3nn": lambda t: chain(to_e3nn(t[:, 0]))}
    if mace is not None:
        mace = mace.to(dtype)
        x = m[:, 0].transpose(1, 2)  # (N, C, D): MACE's layout
        y = torch.ones(nodes, 1, dtype=dtype)
        mace_out = mace(x, y)
        assert mace_out.shape == out.shape and str(mace.irreps_out) == str(chain.irreps_out), \
            f"MACE output {mace.irreps_out} {tuple(mace_out.shape)} != {chain.irreps_out} {tuple(out.shape)}"
        degrees["mace"] = lambda t: mace(t[:, 0].transpose(1, 2), y)
    for name, f in degrees.items():
        third, fourth = polynomial_degree(f, m)
        assert third > 1e-6 and fourth < 1e-9, f"{name}: not of degree {correlation} ({third}, {fourth})"
        result[f"{name}_degree4_residual"] = fourth
    return result


def gaunt_call(nodes, channels, lmax, correlation, dtype, backend, device="cpu"):
    basis = product_basis(channels, lmax, correlation, backend).to(device=device, dtype=dtype)
    m = torch.randn(nodes, 2, (lmax + 1) ** 2, channels, dtype=dtype, device=device, requires_grad=True)
    return lambda: torch.autograd.grad(basis(m).square().sum(), m)


def e3nn_call(nodes, channels, lmax, correlation, dtype, device="cpu"):
    chain = ChainedTensorProducts(channels, lmax, correlation).to(device=device, dtype=dtype)
    x = torch.randn(nodes, channels * (lmax + 1) ** 2, dtype=dtype, device=device, requires_grad=True)
    return lambda: torch.autograd.grad(chain(x).square().sum(), x)


def mace_call(nodes, channels, lmax, correlation, dtype, contraction=None):
    if contraction is None:
        contraction = mace_contraction(channels, lmax, correlation, dtype)
    contraction = contraction.to(dtype)
    x = torch.randn(nodes, channels, (lmax + 1) ** 2, dtype=dtype, requires_grad=True)
    y = torch.ones(nodes, 1, dtype=dtype)
    return lambda: torch.autograd.grad(contraction(x, y).square().sum(), x)


def weight_counts(channels, lmax, correlation, contraction, with_e3nn) -> dict:
    """Learned weights of each column's module (the Gaunt one's second parity class included)."""
    count = lambda module: sum(p.numel() for p in module.parameters() if p.requires_grad)  # noqa: E731
    counts = {"gaunt": count(product_basis(channels, lmax, correlation, "grid"))}
    if with_e3nn:
        counts["e3nn"] = count(ChainedTensorProducts(channels, lmax, correlation))
    if contraction is not None:
        counts["mace"] = count(contraction)
    return counts



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=[4])
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--correlation", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--backends", nargs="+", default=["grid", "fft"], choices=["grid", "fft"])
    parser.add_argument("--no-e3nn", action="store_true")
    parser.add_argument("--no-mace", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: without the MACE column)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    use_mace = SymmetricContraction is not None and not args.no_mace
    if use_mace and args.device != "cpu":
        raise SystemExit("the MACE column runs on CPU only here: add --no-mace with --device")
    if SymmetricContraction is None and not args.no_mace:
        print("note: mace is not importable here (run in mace-venv: make bench-gaunt-mace); MACE column skipped")
    versions = {"torch": torch.__version__, "e3nn": e3nn.__version__}
    if use_mace:
        import mace
        versions["mace"] = getattr(mace, "__version__", "unknown")
    results = {"nodes": args.nodes, "correlation": args.correlation, "body_order": args.correlation + 1,
               "dtype": args.dtype, "threads": args.threads, "device": device_name(args.device),
               "repeats": args.repeats, "warmup": args.warmup,
               "versions": versions, "loadavg_start": os.getloadavg(), "rows": []}
    reference = args.backends[0]
    columns = list(args.backends) + ([] if args.no_e3nn else ["e3nn"]) + (["mace"] if use_mace else [])
    peers = [c for c in columns if c not in args.backends]
    print(f"\nnodes = {args.nodes}, correlation = {args.correlation} (body order {args.correlation + 1}), "
          f"{args.dtype}, {args.threads} thread(s); forward + backward (input gradient); ratios = peer / {reference}")
    header = ["C", "L"] + [f"{c} ms" for c in columns] + [f"{p}/{b}" for p in peers for b in args.backends]
    print("| " + " | ".join(header) + " |\n|" + " ---: |" * len(header))
    for channels in args.channels:
        for lmax in args.lmax:
            torch.manual_seed(0)
            row = {"channels": channels, "lmax": lmax, "loadavg": os.getloadavg()[0]}
            contraction = None
            if use_mace:
                start = time.perf_counter()
                contraction = mace_contraction(channels, lmax, args.correlation, dtype)
                row["mace_setup_s"] = time.perf_counter() - start
            row["checks"] = check(channels, lmax, args.correlation, args.backends, contraction)
            for backend in args.backends:
                row[f"{backend}_ms"], row[f"{backend}_setup_s"] = timed(
                    lambda: gaunt_call(args.nodes, channels, lmax, args.correlation, dtype, backend, args.device),
                    args.repeats, args.warmup)
            if "e3nn" in columns:
                row["e3nn_ms"], row["e3nn_setup_s"] = timed(
                    lambda: e3nn_call(args.nodes, channels, lmax, args.correlation, dtype, args.device),
                    args.repeats, args.warmup)
            if use_mace:
                row["mace_ms"], _ = timed(
                    lambda: mace_call(args.nodes, channels, lmax, args.correlation, dtype, contraction),
                    args.repeats, args.warmup)
            row["weights"] = weight_counts(channels, lmax, args.correlation, contraction, "e3nn" in columns)
            for peer in peers:
                for backend in args.backends:
                    row[f"{peer}_over_{backend}"] = row[f"{peer}_ms"] / row[f"{backend}_ms"]
            results["rows"].append(row)
            cells = [f"{row[f'{c}_ms']:.1f}" for c in columns]
            ratios = [f"{row[f'{p}_over_{b}']:.1f}" for p in peers for b in args.backends]
            print(f"| {channels} | {lmax} | " + " | ".join(cells + ratios) + " |", flush=True)
    results["loadavg_end"] = os.getloadavg()
    print("load average (1, 5, 15 min) at start", results["loadavg_start"], "and end", results["loadavg_end"])
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
