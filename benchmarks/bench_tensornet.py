"""TensorNet speed: molsym vs torchmd-net, energy + forces per call on CPU.

Run from the repository root in the benchmark environment (see benchmarks/README.md):

    OMP_WAIT_POLICY=PASSIVE bench-venv/bin/python benchmarks/bench_tensornet.py

Both models are built at the same width (128 channels), depth (2 interaction
layers), cutoff (4.5 Å) and radial basis size (32), with random weights (seed 0),
parameters frozen (inference). Each timed callable runs ``--warmup`` times, then
``--repeats`` times interleaved with the other callables of the same row (so a
burst of load on the machine hits both libraries alike); the tables give the
median wall time per call.

What each column times:
- molsym: ``energy_forces_stress(model, graph)`` on a prebuilt graph dict
  (neighbour list not included), under the package's thread policy as ``predict`` and the
  calculator run it (``molsym.models.threads``: one for graphs under 4096 edges, else ``--threads``).
- molsym compiled: ``CompiledPotential(model)(graph)`` (``molsym.models.compiled``),
  energy and forces, after the compilation of the first call of each dtype.
- molsym + NL: ``from_ase`` (vesin neighbour list) + ``collate`` + cast, then
  ``energy_forces_stress``.
- calculator: ``atoms.get_forces()`` through ``molsym.calculators.MolSymCalculator``
  with the positions changed before every call (neighbour list, conversions,
  energy, forces, and for the periodic box also the stress).
- torchmd-net: ``TorchMD_Net.forward(z, pos, batch, box)`` of a model made by
  ``create_model(..., derivative=True)``: its own neighbour list (always included),
  TensorNet, the Scalar output head, forces by autograd. Fastest settings found
  (see README): ``static_shapes=False``, eager mode (not TorchScript),
  ``setup_for_inference`` (precomputed element-pair embeddings), and the fastest per
  row of its two kernel back ends (warp kernels or its pure-PyTorch fallback), each on
  ``--threads`` threads and, for rows of at most ``--one-thread-max-atoms`` atoms, also
  on one thread (``torch.set_num_threads(1)`` around the call, restored after).

The machine load from other processes is sampled during each row and printed:
with 2 cores, any other busy process slows 2-thread OpenMP code several-fold.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from systems import bpa_frames, bpa_molecule, water_box  # noqa: E402
from torchmdnet_model import TorchMDNet  # noqa: E402

import molsym  # noqa: E402
from molsym.data.graph import collate, from_ase, to_device  # noqa: E402
from molsym.models.derivatives import energy_forces_stress  # noqa: E402
from molsym.models.dtypes import DTYPES  # noqa: E402
from molsym.models.threads import policy_threads  # noqa: E402

WIDTH, LAYERS, CUTOFF, NUM_RBF = 128, 2, 4.5, 32
SIZE = (WIDTH, LAYERS, CUTOFF, NUM_RBF)
ELEMENTS = [1, 6, 7, 8]


# --- machine load -------------------------------------------------------------------

def _busy_jiffies() -> tuple[int, int]:
    """(all CPUs' busy jiffies, this process' jiffies)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle, iowait
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime + stime


class LoadMeter:
    """CPU cores used by *other* processes between start() and stop()."""

    def start(self) -> None:
        self._t = time.perf_counter()
        self._busy, self._own = _busy_jiffies()

    def stop(self) -> float:
        busy, own = _busy_jiffies()
        seconds = max(time.perf_counter() - self._t, 1e-9)
        tick = os.sysconf("SC_CLK_TCK")
        return max(0.0, ((busy - self._busy) - (own - self._own)) / tick / seconds)


def wait_until_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Sleep until other processes use less than ``threshold`` cores (1 s samples), at most ``max_wait`` s."""
    meter = LoadMeter()
    deadline = time.perf_counter() + max_wait
    while True:
        meter.start()
        time.sleep(1.0)
        others = meter.stop()
        if others < threshold or time.perf_counter() > deadline:
            return others


# --- timing -------------------------------------------------------------------------

def time_interleaved(callables: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Wall times (s) of each callable, called round-robin ``repeats`` times after ``warmup`` calls each."""
    for fn in callables.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in callables}
    for _ in range(repeats):
        for name, fn in callables.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


# --- molsym -------------------------------------------------------------------------

def molsym_model(dtype: torch.dtype):
    torch.manual_seed(0)
    model = molsym.Potential.from_config(
        {"elements": ELEMENTS, "family": "tensornet", "channels": WIDTH, "layers": LAYERS,
         "cutoff": CUTOFF, "num_radial": NUM_RBF}
    ).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _with_policy(model, graph):
    """Energy and forces under the package's thread policy, as its entry points run them."""
    with policy_threads(graph):
        return energy_forces_stress(model, graph)


def molsym_graph(structures, dtype):
    return to_device(collate([from_ase(a, CUTOFF) for a in structures]), dtype=dtype)


def molsym_calculator_class():
    """MolSymCalculator if the calculator package provides a working ASE calculator, else None."""
    try:
        from ase.calculators.calculator import Calculator

        from molsym.calculators import MolSymCalculator
    except Exception:  # noqa: BLE001 - any import problem means: not available
        return None
    if isinstance(MolSymCalculator, type) and issubclass(MolSymCalculator, Calculator):
        return MolSymCalculator
    return None


_COMPILED: dict = {}


def compiled_potentials(model, dtype):
    """One CompiledPotential per dtype, fed each row's model weights (same seed, same values)."""
    from molsym.models.compiled import CompiledPotential

    runner = _COMPILED.get(dtype)
    if runner is None:
        runner = _COMPILED[dtype] = CompiledPotential(model)
    return runner


def on_one_thread(fn, threads: int):
    """``fn`` called with torch.set_num_threads(1) around it (restored after each call)."""
    def call():
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)

    return call


# --- torchmd-net ----------------------------------------------------------------------

# --- systems ----------------------------------------------------------------------------

def systems(batch_size: int) -> list[tuple[str, list]]:
    return [
        ("3BPA, 27 atoms", [bpa_molecule()]),
        ("water box, 192 atoms, PBC", [water_box()]),
        (f"{batch_size} x 3BPA, {27 * batch_size} atoms", bpa_frames(batch_size)),
    ]


def jiggle(atoms, step: int):
    """Move the atoms a little (deterministically) so a calculator cannot reuse its last result."""
    atoms.positions[0, 0] += 1e-4 if step % 2 else -1e-4


# --- rows ---------------------------------------------------------------------------------

def run_row(label, structures, dtype_name, args, tmdn, calc_class):
    dtype = DTYPES[dtype_name]
    model = molsym_model(dtype)
    graph = molsym_graph(structures, dtype)
    callables = {
        "molsym": lambda: _with_policy(model, graph),
        "molsym+NL": lambda: _with_policy(model, molsym_graph(structures, dtype)),
    }
    if args.compiled:
        compiled = compiled_potentials(model, dtype)
        compiled(graph)  # compiles on the first call of each dtype; later rows reuse the graph
        callables["molsym compiled"] = lambda: compiled(graph)
    one_thread_rows = sum(len(a) for a in structures) <= args.one_thread_max_atoms and args.threads != 1
    if calc_class is not None and len(structures) == 1:
        atoms = structures[0].copy()
        atoms.calc = calc_class(model, dtype=dtype_name)
        counter = iter(range(10**9))

        def calc_call():
            jiggle(atoms, next(counter))
            return atoms.get_forces()

        callables["calculator"] = calc_call
    info = {"edges": int(graph["edge_index"].shape[1]), "atoms": int(graph["positions"].shape[0])}
    if tmdn is not None:
        z, pos, batch, box = tmdn.inputs(structures, dtype)
        for backend in tmdn.backends:
            net = tmdn.model(dtype, backend, SIZE)
            tmdn.setup_for_inference(net, z, batch, dtype)

            def call(net=net, backend=backend):
                tmdn.use(backend)
                return net(z, pos, batch, box=box)

            callables[f"torchmd-net[{backend}]"] = call
            if one_thread_rows:
                callables[f"torchmd-net[{backend}, 1 thread]"] = on_one_thread(call, args.threads)
            energy, forces = call()
            if not torch.isfinite(forces).all():
                raise RuntimeError(f"torchmd-net ({backend}) gave non-finite forces on {label}")
        nl = tmdn.model(dtype, tmdn.backends[0], SIZE).representation_model.distance

        def nl_call():
            tmdn.use(tmdn.backends[0])
            return nl(pos, batch, box)

        callables["torchmd-net NL only"] = nl_call
        info["torchmd-net edges"] = int(nl_call()[0].shape[1])
    others_before = wait_until_quiet(args.max_wait) if args.max_wait > 0 else None
    meter = LoadMeter()
    meter.start()
    times = time_interleaved(callables, args.repeats, args.warmup)
    load = meter.stop()
    medians = {name: 1e3 * statistics.median(ts) for name, ts in times.items()}
    minima = {name: 1e3 * min(ts) for name, ts in times.items()}
    row = {"system": label, "dtype": dtype_name, "median_ms": medians, "min_ms": minima,
           "other_load_cores": round(load, 2), "other_load_before": others_before, **info}
    tm = {k: v for k, v in medians.items() if k.startswith("torchmd-net[")}  # its fastest setting
    alone = ["molsym", "molsym compiled"]
    if tm:
        best = min(tm, key=tm.get)
        row["torchmd-net_ms"] = tm[best]
        row["torchmd-net_backend"] = best[len("torchmd-net["):-1]
        alone.append(best)
    if one_thread_rows:  # small systems: each callable also alone, back to back, as in an MD loop
        row["alone_median_ms"] = {
            name: 1e3 * statistics.median(time_interleaved({name: callables[name]}, args.repeats, args.warmup)[name])
            for name in alone if name in callables
        }
    return row


def markdown(rows) -> str:
    lines = ["| system | dtype | molsym ms | molsym compiled ms | torchmd-net ms (fastest setting) "
             "| torchmd-net / molsym | torchmd-net / molsym compiled | other load (cores) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        med = r["median_ms"]
        m, c = med["molsym"], med.get("molsym compiled")
        t = r.get("torchmd-net_ms")
        tcell = f"{t:.1f} ({r['torchmd-net_backend']})" if t is not None else "n/a"
        ccell = f"{c:.1f}" if c is not None else "n/a"
        ratio = f"{t / m:.2f}" if t is not None else "n/a"
        cratio = f"{t / c:.2f}" if t is not None and c is not None else "n/a"
        lines.append(f"| {r['system']} | {r['dtype']} | {m:.1f} | {ccell} | {tcell} | {ratio} | {cratio} "
                     f"| {r['other_load_cores']:.2f} |")
    alone = [r for r in rows if "alone_median_ms" in r]
    if alone:
        lines += ["", "Each callable alone, back to back (as in an MD loop; the table above interleaves them):", "",
                  "| system | dtype | molsym ms | molsym compiled ms | torchmd-net ms (fastest setting) |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for r in alone:
            a = r["alone_median_ms"]
            cells = [f"{a[k]:.1f}" if k in a else "n/a" for k in ("molsym", "molsym compiled")]
            t = [v for k, v in a.items() if k.startswith("torchmd-net")]
            cells.append(f"{t[0]:.1f} ({r['torchmd-net_backend']})" if t else "n/a")
            lines.append(f"| {r['system']} | {r['dtype']} | " + " | ".join(cells) + " |")
    lines += ["", "Including the neighbour list (torchmd-net always includes its own):", "",
              "| system | dtype | molsym + NL ms | calculator ms | torchmd-net ms | torchmd-net NL alone ms | edges molsym / torchmd-net |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        med = r["median_ms"]
        calc = f"{med['calculator']:.1f}" if "calculator" in med else "n/a"
        t = r.get("torchmd-net_ms")
        tcell = f"{t:.1f}" if t is not None else "n/a"
        nl = f"{med['torchmd-net NL only']:.2f}" if "torchmd-net NL only" in med else "n/a"
        edges = f"{r['edges']} / {r.get('torchmd-net edges', 'n/a')}"
        lines.append(f"| {r['system']} | {r['dtype']} | {med['molsym+NL']:.1f} | {calc} | {tcell} | {nl} | {edges} |")
    return "\n".join(lines)


# --- ASE MD overhead ------------------------------------------------------------------------

def md_overhead(calc_class, steps: int, dtype_name: str, compile: bool = False) -> dict | None:
    """Wall time of ``steps`` VelocityVerlet steps vs the time spent in the calculator's calculate()."""
    if calc_class is None:
        return None
    from ase import units
    from ase.md import velocitydistribution
    from ase.md.verlet import VelocityVerlet

    atoms = bpa_molecule()
    calc = calc_class(molsym_model(DTYPES[dtype_name]), dtype=dtype_name, compile=compile)
    spent = []
    original = calc.calculate

    def timed_calculate(*a, **kw):
        start = time.perf_counter()
        original(*a, **kw)
        spent.append(time.perf_counter() - start)

    calc.calculate = timed_calculate
    atoms.calc = calc
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None)
    if thermalize is None:  # ASE < 3.29
        thermalize = velocitydistribution.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.run(3)  # warm-up
    spent.clear()
    start = time.perf_counter()
    dyn.run(steps)
    total = time.perf_counter() - start
    inside = sum(spent)
    return {"steps": steps, "calculate_calls": len(spent), "md_wall_s": total, "calculate_s": inside,
            "overhead_fraction": (total - inside) / inside, "dtype": dtype_name, "compile": compile}


# --- main -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per callable (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one-thread-max-atoms", type=int, default=100,
                        help="also time torchmd-net on 1 thread for systems up to this many atoms (0: never)")
    parser.add_argument("--batch", type=int, default=32, help="molecules in the batched row")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=list(DTYPES))
    parser.add_argument("--systems", nargs="+", type=int, default=None, help="row indices to run (0, 1, 2)")
    parser.add_argument("--no-torchmdnet", action="store_true")
    parser.add_argument("--no-compiled", dest="compiled", action="store_false",
                        help="skip the compiled molsym column (it compiles once per dtype, 1-2 min each)")
    parser.add_argument("--md-steps", type=int, default=50, help="0 skips the ASE MD overhead measurement")
    parser.add_argument("--max-wait", type=float, default=60.0,
                        help="seconds to wait before each row for other processes to go quiet (0: don't)")
    parser.add_argument("--json", type=Path, default=None, help="write all measurements here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print("warning: OMP_WAIT_POLICY is not PASSIVE; timings may swing several-fold", file=sys.stderr)
    tmdn = None
    if not args.no_torchmdnet:
        try:
            tmdn = TorchMDNet()
        except ImportError as exc:
            print(f"torchmd-net not importable ({exc}); timing molsym only", file=sys.stderr)
    calc_class = molsym_calculator_class()

    rows = []
    chosen = systems(args.batch)
    if args.systems is not None:
        chosen = [chosen[k] for k in args.systems]
    for label, structures in chosen:
        for dtype_name in args.dtypes:
            row = run_row(label, structures, dtype_name, args, tmdn, calc_class)
            rows.append(row)
            print(f"# {label} {dtype_name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in row["median_ms"].items())
                  + f"; other load {row['other_load_cores']:.2f} cores", file=sys.stderr, flush=True)

    md = md_overhead(calc_class, args.md_steps, "float64") if args.md_steps > 0 else None
    md_compiled = [md_overhead(calc_class, args.md_steps, name, compile=True)
                   for name in args.dtypes] if args.md_steps > 0 and args.compiled else []
    env = {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "molsym": molsym.__version__,
        "torchmd-net": tmdn.version if tmdn else None,
        "torchmd-net backends": tmdn.backends if tmdn else None,
        "cpu": _cpu_name(), "repeats": args.repeats, "warmup": args.warmup,
    }
    print(f"torch {env['torch']}, {env['threads']} threads, OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}, "
          f"torchmd-net {env['torchmd-net']}, CPU: {env['cpu']}; median of {args.repeats} calls\n")
    print(markdown(rows))
    if md is not None:
        print(f"\nASE VelocityVerlet, 3BPA, float64, {md['steps']} steps: {md['md_wall_s'] * 1e3:.0f} ms in total, "
              f"{md['calculate_s'] * 1e3:.0f} ms inside MolSymCalculator.calculate ({md['calculate_calls']} calls); "
              f"MD overhead {100 * md['overhead_fraction']:.1f}% of the calculator's time")
    elif calc_class is None:
        print("\nMolSymCalculator not available: calculator column and MD overhead not measured")
    for m in md_compiled:
        if m is not None:
            print(f"ASE VelocityVerlet with MolSymCalculator(compile=True), 3BPA, {m['dtype']}: "
                  f"{m['md_wall_s'] * 1e3 / m['steps']:.1f} ms per step ({m['steps']} steps), "
                  f"{m['calculate_s'] * 1e3 / m['calculate_calls']:.1f} ms per calculator call")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "rows": rows, "md": md, "md_compiled": md_compiled}, indent=1))
    return 0


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
