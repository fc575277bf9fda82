"""Transition-state search with Sella on a molsym potential, fed the model's own Hessian.

Sella (https://github.com/zadorlab/sella) follows the lowest Hessian eigenmode uphill (order=1)
to a first-order saddle. Without a Hessian it builds its curvature information from Davidson
iterations of finite-difference force calls; given ``hessian_function`` it uses a Hessian
instead (the model's exact autograd Hessian, or the one its Hessian head predicts) at the start
and every ``--refresh`` steps (Sella's ``diag_every_n``), with quasi-Newton updates in between.
This script compares them from the same start and checks what was found: a first-order saddle
of the model's surface has max |F| < fmax and exactly one negative eigenvalue of the exact,
projected (``molsym.analysis.vibrations``) Hessian.

The predicted Hessian on a trained surface (ethanol, rMD17 configurations): train a potential,
teach it a head of its own Hessians (self-distillation, ``molsym.heads.distill``), search:

    .venv/bin/molsym train ethanol.yaml --output runs/ethanol    # data: train, test, e0: nothing else
    OMP_NUM_THREADS=1 .venv/bin/python examples/ts_search/ts_search.py --checkpoint runs/ethanol/best.pt \
        --distil ../shared/data/ethanol/train.xyz --starts ../shared/data/ethanol/test_MD.xyz \
        --molecules 0 100 200 300 400 500 600 700 800 900 --hessians none head head_initial autograd

Other systems:

    OMP_NUM_THREADS=1 .venv/bin/python examples/ts_search/ts_search.py --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 .venv/bin/python examples/ts_search/ts_search.py --checkpoint runs/horm/plain/model.pt \\
        --horm ../shared/data/horm_sample100/sample_100_DERIVED.npz --molecules 3 17 --hessians none autograd head
    OMP_NUM_THREADS=1 .venv/bin/python examples/ts_search/ts_search.py --checkpoint runs/distill/student.pt \\
        --starts ../shared/data/3bpa/train_mixedT.xyz --molecules 0 1 2 --hessians none autograd head

Default systems: per seed, a random TensorNet (weights of that seed) and ethanol rattled by
0.1 Å (same seed), the same start for every method; ``--checkpoint`` with ``--horm``: a trained
model started from HORM (Transition1x) geometries, which lie near the reference method's
transition states, or with ``--starts``: from frames of any structure file.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

HESSIANS = ("none", "autograd", "head", "autograd_initial", "head_initial")


def random_model(seed: int, head: bool = True):
    """A small TensorNet (float64, random weights of ``seed``) with an untrained Hessian head."""
    import torch

    import molsym

    torch.manual_seed(seed)
    config = {"family": "tensornet", "channels": 16, "layers": 2, "num_radial": 8, "cutoff": 4.0,
              "elements": [1, 6, 7, 8]}
    if head:
        config["heads"] = {"hessian": {"cutoff": 4.0}}
    model = molsym.Potential.from_config(config).double()
    model.set_energy_reference(scale=1.0, shift=-0.1)
    return model.eval()


def train_teacher(train_file, e0_file, output, epochs: int = 40, seed: int = 0):
    """A potential trained on ``train_file`` (energies and forces) by molsym's loop with the default
    recipe, a fixed number of epochs (float32, seed ``seed``); returns it loaded from ``output``."""
    from pathlib import Path

    import molsym
    from molsym.train.config import validate_config
    from molsym.train.loop import train

    raw = {"output": str(output), "seed": seed, "dtype": "float32", "device": "cpu", "epochs": epochs,
           "progress": False, "data": {"train": str(train_file), "e0": str(e0_file)}}
    train(validate_config(raw, base_dir="."))
    return molsym.load(Path(output) / "best.pt")


def with_distilled_head(model, frames, *, epochs: int = 30, channels: int = 32, batch: int = 4):
    """``model`` with a Hessian head taught its own exact Hessians of ``frames``
    (``molsym.heads.distill``; the energy surface is unchanged)."""
    from molsym.heads.distill import distil_hessian_head

    return distil_hessian_head(model, frames, head={"channels": channels}, epochs=epochs, batch=batch)


def start_geometry(seed: int, name: str = "CH3CH2OH", rattle: float = 0.1):
    from ase.build import molecule

    atoms = molecule(name)
    atoms.rattle(rattle, seed=seed)
    return atoms


class CountingCalls:
    """Counts the force evaluations a calculator performs (``calculate`` calls; cached reads are free)."""

    def __init__(self, calc):
        self.calc, self.count = calc, 0
        inner = calc.calculate

        def calculate(*args, **kwargs):
            self.count += 1
            return inner(*args, **kwargs)

        calc.calculate = calculate


def saddle_order(atoms, calc) -> tuple[int, np.ndarray]:
    """Number of negative eigenvalues of the exact projected mass-weighted Hessian, and the frequencies (cm^-1)."""
    from molsym.analysis import vibrations

    result = vibrations(atoms, calc, method="autograd")
    return result.imaginary_count, result.frequencies


def search(model, atoms, hessian: str = "autograd", *, fmax: float = 0.01, steps: int = 300,
           refresh: int | None = 3) -> dict:
    """Sella (order 1, Cartesian coordinates) from ``atoms`` on ``model``'s surface.

    ``hessian``: "none" (Sella's own Davidson iterations on force calls), "autograd" (the exact
    Hessian) or "head" (the model's Hessian head) in place of those iterations, recomputed every
    ``refresh`` steps (None: at the start only; Sella's quasi-Newton updates in between); or
    "autograd_initial" / "head_initial": that Hessian once, as Sella's initial Hessian (``H0``),
    which its Davidson iterations then refine with force calls (the Hessian is their
    preconditioner and the curvature model of every direction they do not sample). Returns converged, force_calls,
    hessian_calls, steps, max_force (eV/Å), negative (negative eigenvalues of the exact Hessian
    at the end), first_order (converged with exactly one), energy (eV), imaginary frequency; a
    search that moves atoms onto each other returns converged False and the error as ``failed``.
    """
    from sella import Sella

    from molsym.calculators import MolSymCalculator
    from molsym.data.structure_checks import StructureError

    if hessian not in HESSIANS:
        raise ValueError(f"hessian must be one of {list(HESSIANS)}, got {hessian!r}")
    atoms = atoms.copy()
    calc = MolSymCalculator(model, dtype="float64")
    counter = CountingCalls(calc)
    atoms.calc = calc
    hessian_calls = [0]

    def hessian_function(a):
        hessian_calls[0] += 1
        return calc.get_hessian(a, method=hessian.removesuffix("_initial")).copy()

    with tempfile.TemporaryDirectory() as tmp:
        if hessian == "none":
            kwargs = {}
        elif hessian.endswith("_initial"):
            kwargs = {"H0": hessian_function(atoms)}
        else:
            kwargs = {"hessian_function": hessian_function, "diag_every_n": refresh}
        optimizer = Sella(atoms, order=1, internal=False, logfile=None, trajectory=None, **kwargs)
        cwd = os.getcwd()
        os.chdir(tmp)  # Sella may write files next to the working directory
        try:
            # Sella measures convergence on its projected forces, which can sit a few per cent
            # below the largest atomic force: tighten its target until the forces themselves are
            # below fmax (a handful of extra steps at most)
            target, converged = fmax, False
            while optimizer.nsteps < steps:
                converged = bool(optimizer.run(fmax=target, steps=steps - optimizer.nsteps))
                if not converged or np.linalg.norm(atoms.get_forces(), axis=1).max() < fmax:
                    break
                target *= 0.8
        except StructureError as error:  # the search walked atoms onto each other: a failed search
            return {"hessian": hessian, "converged": False, "force_calls": counter.count,
                    "hessian_calls": hessian_calls[0], "steps": int(optimizer.nsteps), "first_order": False,
                    "failed": str(error)}
        finally:
            os.chdir(cwd)
    force_calls = counter.count
    max_force = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    negative, frequencies = saddle_order(atoms, calc)
    return {"hessian": hessian, "converged": converged, "force_calls": force_calls,
            "hessian_calls": hessian_calls[0], "steps": int(optimizer.nsteps), "max_force": max_force,
            "negative": negative, "first_order": bool(converged and negative == 1 and max_force < fmax),
            "energy": float(atoms.get_potential_energy()), "imaginary_cm1": float(frequencies[0]),
            "positions": atoms.get_positions().tolist()}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--hessians", nargs="+", choices=HESSIANS, default=["none", "autograd"])
    parser.add_argument("--checkpoint", default=None, help="a trained model (molsym.save); default random models")
    parser.add_argument("--horm", default=None, help="HORM .npz: start from its molecules (with --checkpoint)")
    parser.add_argument("--starts", default=None, help="or any file ase.io.read takes (with --checkpoint)")
    parser.add_argument("--molecules", type=int, nargs="+", default=[0], help="indices of the start structures")
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--refresh", type=int, default=3, help="recompute the model's Hessian every this many steps")
    parser.add_argument("--distil", default=None,
                        help="a structure file: first teach the checkpoint's model a Hessian head of its own "
                             "exact Hessians of its first --distil-frames frames (self-distillation)")
    parser.add_argument("--distil-frames", type=int, default=300)
    parser.add_argument("--head-epochs", type=int, default=60)
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    if args.checkpoint:
        import molsym
        from molsym.data.readers.horm import read_horm_npz

        model = molsym.load(args.checkpoint).double()
        if args.distil:
            import ase.io

            model = with_distilled_head(model, ase.io.read(args.distil, index=f":{args.distil_frames}"),
                                        epochs=args.head_epochs)
        if args.horm:
            starts = [(f"horm {s.meta['index']}", s.atoms) for s in read_horm_npz(args.horm, args.molecules)]
        elif args.starts:
            import ase.io

            starts = [(f"frame {i}", ase.io.read(args.starts, index=i)) for i in args.molecules]
        else:
            parser.error("--checkpoint needs --horm or --starts (the start geometries)")
        cases = [(label, model, atoms) for label, atoms in starts]
    else:
        cases = [(f"seed {seed}", random_model(seed), start_geometry(seed)) for seed in args.seeds]
    for label, model, atoms in cases:
        for hessian in args.hessians:
            row = {"case": label, **search(model, atoms, hessian, fmax=args.fmax, steps=args.steps,
                                                 refresh=args.refresh)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "positions"}), flush=True)
    summary = {}
    for hessian in args.hessians:
        mine = [r for r in rows if r["hessian"] == hessian]
        summary[hessian] = {"first_order": sum(r["first_order"] for r in mine), "cases": len(mine),
                            "median_force_calls": float(np.median([r["force_calls"] for r in mine]))}
    if "none" in args.hessians:
        for hessian in args.hessians:
            if hessian != "none":
                fewer = sum(a["force_calls"] < b["force_calls"] for a, b in zip(
                    [r for r in rows if r["hessian"] == hessian], [r for r in rows if r["hessian"] == "none"]))
                summary[hessian]["fewer_force_calls_than_none"] = fewer
    print(json.dumps(summary))
    if args.output:
        with open(args.output + ".tmp", "w") as f:
            json.dump({"rows": rows, "summary": summary, "loadavg": os.getloadavg()}, f, indent=1)
        os.replace(args.output + ".tmp", args.output)


if __name__ == "__main__":
    main()
