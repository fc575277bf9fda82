"""Write small OC20-format training and validation data (ASE db, .aselmdb) labelled with ASE's EMT.

Run from the repository root::

    python examples/oc20/make_data.py                        # examples/oc20/data/{train,valid}.aselmdb
    python examples/oc20/make_data.py --systems 48 --frames 8 --size 4 4 4

Each system is a Cu or Pt fcc(111) slab with one O, CO or H adsorbate (OC20
tags: 0 subsurface, fixed by FixAtoms; 1 surface; 2 adsorbate), and its frames
are the first steps of an EMT BFGS relaxation; see
:mod:`molsym.data.readers.oc20_synthetic`. The validation split is made the
same way with another seed (other adsorption sites and rattles). Energies are
EMT, not DFT: the data exercise the OC20 pipeline, not catalysis.
Units: eV, eV/Å, Å.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from molsym.data.readers.oc20_synthetic import ADSORBATE_GEOMETRIES, write_oc20_synthetic
from molsym.data.readers.targets import fixed_mask

DEFAULT_OUTPUT = Path("examples") / "oc20" / "data"
METALS = ("Cu", "Pt")  # elements with EMT parameters that form the fcc(111) slabs of this example


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"directory for train.aselmdb and valid.aselmdb (default {DEFAULT_OUTPUT})")
    parser.add_argument("--systems", type=int, default=24, help="training systems (default 24)")
    parser.add_argument("--frames", type=int, default=5, help="relaxation frames per training system (default 5)")
    parser.add_argument("--valid-systems", type=int, default=6, help="validation systems (default 6)")
    parser.add_argument("--valid-frames", type=int, default=None,
                        help="frames per validation system (default: --frames)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training split (default 0)")
    parser.add_argument("--valid-seed", type=int, default=None,
                        help="seed of the validation split (default: --seed + 1000)")
    parser.add_argument("--size", type=int, nargs=3, default=(3, 3, 4), metavar=("A", "B", "LAYERS"),
                        help="slab repetitions along a and b, and metal layers (default 3 3 4)")
    parser.add_argument("--surface-layers", type=int, default=2,
                        help="top layers that are free and tagged 1; the others are fixed, tag 0 (default 2)")
    parser.add_argument("--vacuum", type=float, default=6.0, help="vacuum on each side of the slab, Å (default 6)")
    parser.add_argument("--metals", nargs="+", default=list(METALS), choices=METALS, help="slab metals")
    parser.add_argument("--adsorbates", nargs="+", default=list(ADSORBATE_GEOMETRIES),
                        choices=sorted(ADSORBATE_GEOMETRIES), help="adsorbates")
    args = parser.parse_args(argv)
    if args.valid_frames is None:
        args.valid_frames = args.frames
    if args.valid_seed is None:
        args.valid_seed = args.seed + 1000
    if min(args.systems, args.frames, args.valid_frames) < 1 or args.valid_systems < 0:
        parser.error("--systems, --frames and --valid-frames must be >= 1, --valid-systems >= 0")
    if min(args.size) < 1:
        parser.error("--size values must be >= 1")
    if not 1 <= args.surface_layers <= args.size[2]:
        parser.error(f"--surface-layers must be between 1 and the number of layers ({args.size[2]})")
    if args.vacuum <= 0:
        parser.error("--vacuum must be > 0")
    if args.valid_systems and args.valid_seed == args.seed:
        parser.error("--valid-seed must differ from --seed (else validation repeats training frames)")
    return args


def check_backend() -> None:
    """Exit with an install hint when the optional .aselmdb packages are missing."""
    try:
        import ase_db_backends.aselmdb  # noqa: F401
        import lmdb  # noqa: F401
    except ImportError:
        sys.exit("writing .aselmdb needs the optional packages 'ase-db-backends' and 'lmdb': "
                 "pip install 'molsym[oc20]' (or: pip install ase-db-backends lmdb)")


def write_split(path: Path, num_systems: int, frames_per_system: int, seed: int, args) -> list:
    """Write one split to ``path``; returns its frames (``ase.Atoms``)."""
    return write_oc20_synthetic(
        path,
        num_systems=num_systems,
        frames_per_system=frames_per_system,
        metals=tuple(args.metals),
        adsorbates=tuple(args.adsorbates),
        size=tuple(args.size),
        surface_layers=args.surface_layers,
        vacuum=args.vacuum,
        seed=seed,
    )


def summary(name: str, path: Path, frames) -> str:
    """One line per split: rows, atoms per structure, elements, fixed atoms, energies."""
    sizes = [len(atoms) for atoms in frames]
    fixed = sum(int(fixed_mask(atoms, str(path)).sum()) for atoms in frames)
    elements = sorted({symbol for atoms in frames for symbol in atoms.get_chemical_symbols()})
    tags = np.concatenate([atoms.get_tags() for atoms in frames])
    counts = ", ".join(f"{tag}: {int((tags == tag).sum())}" for tag in (0, 1, 2))
    energies = [atoms.get_potential_energy() for atoms in frames]
    return (f"{name}: {len(frames)} rows ({len({a.info['sid'] for a in frames})} systems) -> {path}\n"
            f"  atoms per structure {min(sizes)}-{max(sizes)}, elements {' '.join(elements)}\n"
            f"  fixed atoms {fixed / sum(sizes):.1%}, atoms per tag {{{counts}}}\n"
            f"  EMT energy {min(energies):.3f} to {max(energies):.3f} eV")


def main(argv=None) -> None:
    args = parse_args(argv)
    check_backend()
    args.output.mkdir(parents=True, exist_ok=True)
    splits = [("train", args.systems, args.frames, args.seed)]
    if args.valid_systems:
        splits.append(("valid", args.valid_systems, args.valid_frames, args.valid_seed))
    for name, num_systems, frames_per_system, seed in splits:
        path = args.output / f"{name}.aselmdb"
        frames = write_split(path, num_systems, frames_per_system, seed, args)
        print(summary(name, path, frames), flush=True)


if __name__ == "__main__":
    main()
