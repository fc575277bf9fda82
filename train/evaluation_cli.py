"""``molsym eval``: metrics table, parity plots and the learning curve of a checkpoint on labelled data."""
from __future__ import annotations

from pathlib import Path

import torch

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
    dataset = read_split(list(args.data), spec, model.cutoff, dtype, data)
    if args.exclude:
        excluded = read_split(list(args.exclude), spec, model.cutoff, dtype, data)
        seen = {structure_key(sample) for sample in iter_samples(SampleView(excluded))}
        from torch.utils.data import Subset

        keep = [i for i in range(len(dataset)) if structure_key(sample_of(dataset, i)) not in seen]
        if not keep:
            raise ValueError("--exclude removes every structure of --data")
        print(f"--exclude: {len(dataset) - len(keep)} of {len(dataset)} structures dropped, {len(keep)} evaluated")
        dataset = Subset(dataset, keep)
    has_forces = K.FORCES in sample_of(dataset, 0).targets
    sums, predictions = evaluate(model, loader(dataset, args.batch_size, world), device=device, dtype=dtype,
                                 world=world, targets={"forces": has_forces, "stress": bool(args.stress_key)},
                                 mask_fixed=not args.all_atoms, keep_predictions=True)
    name = Path(args.data[0]).stem
    print(f"{args.model} on {', '.join(args.data)} ({len(dataset)} structures)")
    print(format_table({name: sums.metrics()}))
    output = Path(args.output) if args.output else Path(args.model).resolve().parent
    written = _plots(predictions.arrays(), output, name, getattr(model, "metadata", {}))
    for path in written:
        print(f"wrote {path}")
    return 0


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
