"""``molsym eval``: metrics table, parity plots and the learning curve of a checkpoint on labelled data.

Each ``--data`` file is evaluated on its own: one table row and one pair of
parity plots per file, named after it, plus a row ``all`` over every file when
there are several. A file without the labels named by ``--energy-key`` /
``--forces-key`` is an error that lists the keys it does hold.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset

from molsym.checkpoint import load
from molsym.data import keys as K
from molsym.data.readers import iter_samples
from molsym.train.data import SampleView, read_split, sample_of, structure_key
from molsym.train.distributed import World, resolve_device
from molsym.train.evaluate import evaluate, loader
from molsym.train.metrics import format_table
from molsym.train.plots import learning_curve, parity_plot


def _data_options(args) -> tuple[dict, dict]:
    """The ``data`` and ``loss`` sections that :func:`read_split` needs, from the command line."""
    data = {"format": "auto", "in_memory": "auto", "energy_key": args.energy_key, "forces_key": args.forces_key,
            "stress_key": args.stress_key, "hessian_key": None, "virial_key": None,
            "reference_energy_key": args.reference_energy_key}
    loss = {"energy": 0.0, "forces": 0.0, "stress": 1.0 if args.stress_key else 0.0, "hessian": 0.0}
    return data, loss


def run_eval(args) -> int:
    """Evaluate ``args.model`` on each file of ``args.data``: one metrics row per file (and one over all)."""
    from molsym.train.data import target_spec

    for path in args.data + (args.exclude or []):
        if not Path(path).exists():
            raise FileNotFoundError(f"--data/--exclude: {path} does not exist")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    world = World()
    device = resolve_device(args.device, world)
    model = load(args.model, map_location=device)
    dtype = getattr(torch, args.dtype) if args.dtype else next(model.parameters()).dtype
    model.to(dtype)
    data, loss = _data_options(args)
    spec = target_spec(data, loss)
    seen = None
    if args.exclude:
        excluded = read_split(list(args.exclude), spec, model.cutoff, dtype, data)
        seen = {structure_key(sample) for sample in iter_samples(SampleView(excluded))}
    rows, total = {}, None
    output = Path(args.output) if args.output else Path(args.model).resolve().parent
    for name, path in zip(_row_names(args.data), args.data):
        dataset = read_split([path], spec, model.cutoff, dtype, data)
        if seen is not None:
            keep = [i for i in range(len(dataset)) if structure_key(sample_of(dataset, i)) not in seen]
            if not keep:
                raise ValueError(f"--exclude removes every structure of {path}")
            print(f"--exclude: {len(dataset) - len(keep)} of {len(dataset)} structures of {path} dropped, "
                  f"{len(keep)} evaluated")
            dataset = Subset(dataset, keep)
        first = sample_of(dataset, 0)
        if K.ENERGY not in first.targets and K.FORCES not in first.targets:
            raise ValueError(_no_labels_message(path, first, args))
        sums, predictions = evaluate(model, loader(dataset, args.batch_size, world), device=device, dtype=dtype,
                                     world=world, targets={"forces": K.FORCES in first.targets,
                                                           "stress": bool(args.stress_key)},
                                     mask_fixed=not args.all_atoms, keep_predictions=True)
        print(f"{args.model} on {path} ({len(dataset)} structures)")
        rows[name] = sums.metrics()
        total = sums if total is None else total.combined(sums)
        for written in _plots(predictions.arrays(), output, name, getattr(model, "metadata", {})):
            print(f"wrote {written}")
    if len(rows) > 1:
        rows["all"] = total.metrics()
    print(format_table(rows))
    return 0


def _row_names(paths: list[str]) -> list[str]:
    """A table row name per file: its stem, made unique by a number where stems repeat."""
    stems = [Path(p).stem for p in paths]
    return [stem if stems.count(stem) == 1 else f"{stem}_{i + 1}" for i, stem in enumerate(stems)]


def _no_labels_message(path: str, sample, args) -> str:
    """Which label keys were looked for, and which keys the first structure does hold."""
    atoms = sample.atoms
    stored = sorted(getattr(atoms.calc, "results", {}) or {}) if atoms.calc is not None else []
    info = sorted(k for k in atoms.info if k not in ("sid", "fid", "config_type"))
    arrays = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
    return (f"{path}: no labels to evaluate against: structure 0 has no energy under --energy-key "
            f"{args.energy_key!r} and no forces under --forces-key {args.forces_key!r}. It holds calculator "
            f"results {stored}, info keys {info} and per-atom arrays {arrays}; name the label keys, "
            f"e.g. --energy-key REF_energy --forces-key REF_forces")


def _plots(arrays: dict, output: Path, name: str, metadata: dict) -> list[Path]:
    written = []
    if arrays["energy_per_atom_ref"].size:
        written.append(parity_plot(arrays["energy_per_atom_ref"], arrays["energy_per_atom_pred"],
                                   output / f"parity_energy_{name}.png", quantity="energy per atom",
                                   unit="eV/atom", title=name))
    if arrays["forces_ref"].size:
        written.append(parity_plot(arrays["forces_ref"], arrays["forces_pred"], output / f"parity_forces_{name}.png",
                                   quantity="force component", unit="eV/Å", title=name))
    history = metadata.get("history") if isinstance(metadata, dict) else None
    if history:
        written.append(learning_curve(history, output / "learning_curve.png"))
    return written
