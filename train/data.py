"""Datasets of a training config: reading each split, holding out validation data, and data statistics.

Formats, by ``data.format`` or (``auto``) by suffix: ``.aselmdb`` and ``.db``
are ASE databases streamed row by row (``.aselmdb`` is OC20's LMDB release);
``.json`` is an ASE json database when it parses as one; an ``.extxyz`` with a
``.txt`` frame log beside it is OC20 S2EF (tags, move_mask, sid/fid,
reference energies); everything else goes through ``ase.io.read``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from molsym.data.readers import (
    AseDbDataset,
    AtomsDataset,
    LinearReference,
    isolated_atom_reference,
    TargetSpec,
    compute_statistics,
    fit_linear_reference,
    iter_samples,
    read_db_samples,
    read_oc20_s2ef,
    read_samples,
)
from molsym.data.readers.horm import read_horm_npz
from molsym.data.readers.oc20 import default_log_path
from molsym.train.preflight import validate_splits

ISOLATED_ATOM_SUFFIXES = (".xyz", ".extxyz")


def target_spec(data: dict, loss: dict) -> TargetSpec:
    """Which labels to read: energy and forces when named (required when their loss weight is positive);
    stress and Hessian only when their loss weight is positive (then required); tags and fixed atoms always."""
    weights = {**loss, "hessian": max(loss["hessian"], loss.get("hessian_head", 0.0),
                              loss.get("hessian_eigen", 0.0))}  # both train on the label
    required = tuple(name for name in ("energy", "forces", "stress", "hessian") if weights[name] > 0)
    for name in required:
        if data[f"{name}_key"] is None:
            raise ValueError(f"loss.{name} is positive but data.{name}_key is null: name the label to train on")
    return TargetSpec(
        energy=data["energy_key"],
        forces=data["forces_key"],
        stress=data["stress_key"] if loss["stress"] > 0 else None,
        hessian=data["hessian_key"] if weights["hessian"] > 0 else None,
        virial=data["virial_key"] if loss["stress"] > 0 else None,
        required=required,
        tags=True,
        fixed=True,
        reference_key=data["reference_energy_key"],
    )


def file_format(path: str, requested: str = "auto") -> str:
    """"db", "oc20_s2ef", "horm" (a .npz of HORM arrays) or "ase" for ``path``."""
    if requested != "auto":
        return requested
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return "horm"
    if Path(path).is_dir() or suffix in (".aselmdb", ".db"):
        return "db"
    if suffix == ".json":
        return "db" if _is_ase_json_db(path) else "ase"
    if suffix == ".extxyz" and default_log_path(path) is not None:
        return "oc20_s2ef"
    return "ase"


def _is_ase_json_db(path: str) -> bool:
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and "ids" in content


def read_split(paths: list[str], spec: TargetSpec, cutoff: float, dtype: torch.dtype, data: dict) -> Dataset:
    """One dataset over ``paths`` (concatenated in order); databases stream unless ``in_memory`` is true."""
    parts = []
    for path in paths:
        kind = file_format(path, data["format"])
        streamed = kind == "db" and data["in_memory"] in ("auto", False) and (
            Path(path).is_dir() or Path(path).suffix.lower() in (".aselmdb", ".db"))
        if streamed:
            parts.append(AseDbDataset(path, cutoff, dtype, spec))
            continue
        if kind == "db":
            samples = read_db_samples(path, spec)
        elif kind == "oc20_s2ef":
            samples = read_oc20_s2ef(path, spec=spec)
        elif kind == "horm":
            samples = read_horm_npz(path, spec=spec)
        else:
            samples = read_samples(path, spec)
        parts.append(AtomsDataset(samples, cutoff, dtype, precompute=False))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def sample_of(dataset: Dataset, index: int):
    """The :class:`~molsym.data.readers.Sample` at ``index`` of a dataset, Subset or ConcatDataset."""
    if isinstance(dataset, Subset):
        return sample_of(dataset.dataset, int(dataset.indices[index]))
    if isinstance(dataset, ConcatDataset):
        import bisect

        part = bisect.bisect_right(dataset.cumulative_sizes, index)
        start = dataset.cumulative_sizes[part - 1] if part else 0
        return sample_of(dataset.datasets[part], index - start)
    return dataset.sample(index)


class SampleView:
    """``len`` and ``sample(i)`` of any dataset, for :func:`molsym.data.readers.iter_samples`."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int):
        return sample_of(self.dataset, index)


def structure_key(sample) -> bytes:
    """Identity of a structure: its atomic numbers and positions rounded to 1e-5 Å."""
    atoms = sample.atoms
    positions = np.round(np.asarray(atoms.positions, dtype=np.float64), 5) + 0.0  # + 0.0 folds -0.0 into 0.0
    return np.asarray(atoms.numbers, dtype=np.int64).tobytes() + positions.tobytes()


@dataclass
class Splits:
    """The train, validation and (optional) test datasets of a run."""

    train: Dataset
    valid: Dataset | None
    test: Dataset | None


def build_splits(config: dict, cutoff: float, dtype: torch.dtype) -> Splits:
    """Read every split of ``config["data"]``; hold out ``valid_fraction`` of train when no valid file is given.

    The held-out part is chosen by a permutation seeded with ``config["seed"]``,
    so a resumed or distributed run sees the same split. Every split is then
    checked (:func:`molsym.train.preflight.validate_splits`): a bad structure,
    label or element stops the run here, naming the file and frame, before any step.
    """
    data = config["data"]
    spec = target_spec(data, config["loss"])
    train = read_split(data["train"], spec, cutoff, dtype, data)
    if data["max_structures"] is not None and data["max_structures"] < len(train):
        train = Subset(train, list(range(data["max_structures"])))
    valid = read_split(data["valid"], spec, cutoff, dtype, data) if data["valid"] else None
    if valid is None and data["valid_fraction"] > 0:
        count = len(train)
        held = int(round(data["valid_fraction"] * count))
        if held == 0 or held == count:
            raise ValueError(f"data.valid_fraction {data['valid_fraction']} of {count} training structures "
                             f"leaves {held} for validation; give more data or a 'valid' file")
        order = torch.randperm(count, generator=torch.Generator().manual_seed(config["seed"])).tolist()
        valid = Subset(train, sorted(order[:held]))
        train = Subset(train, sorted(order[held:]))
    test = read_split(data["test"], spec, cutoff, dtype, data) if data["test"] else None
    if test is not None and data["test_exclude_train"]:
        seen = {structure_key(sample) for sample in iter_samples(SampleView(_root(train)))}
        keep = [i for i in range(len(test)) if structure_key(sample_of(test, i)) not in seen]
        if not keep:
            raise ValueError("data.test_exclude_train: every test structure also occurs in train")
        test = Subset(test, keep)
    if len(train) == 0:
        raise ValueError("the training set is empty")
    splits = Splits(train, valid, test)
    validate_splits(splits, config, cutoff)
    return splits


def _root(dataset: Dataset) -> Dataset:
    """The dataset under train/valid Subsets (train data before holding validation out)."""
    return _root(dataset.dataset) if isinstance(dataset, Subset) else dataset


def energy_reference(data: dict, train: Dataset, elements: list[int]) -> LinearReference | None:
    """E0 per ``data.e0``: least squares on the training data, an isolated-atoms file, a table file or a mapping."""
    e0 = data["e0"]
    if e0 is None:
        return None
    if isinstance(e0, dict):
        return LinearReference.from_dict(e0)
    if e0 == "least_squares":
        samples = iter_samples(SampleView(train), data["statistics_structures"])
        return fit_linear_reference(samples, elements)
    if Path(e0).suffix.lower() in ISOLATED_ATOM_SUFFIXES:
        return isolated_atom_reference(e0, energy_key=data["energy_key"] or "energy")
    return LinearReference.load(e0)


def is_streamed(dataset: Dataset) -> bool:
    """Whether any part of ``dataset`` reads its structures from a database on each access."""
    if isinstance(dataset, Subset):
        return is_streamed(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return any(is_streamed(part) for part in dataset.datasets)
    return isinstance(dataset, AseDbDataset)


def dataset_elements(dataset: Dataset, limit: int | None = None) -> list[int]:
    """Sorted atomic numbers present in (up to ``limit`` evenly spaced structures of) ``dataset``."""
    found: set[int] = set()
    for sample in iter_samples(SampleView(dataset), limit):
        found.update(int(z) for z in np.unique(sample.atoms.numbers))
    return sorted(found)


def model_config_from_data(config: dict, splits: Splits) -> dict:
    """The model config with what the data decide filled in where the user left it out:
    elements, E0, shift and scale of the readout, and the mean neighbour count."""
    from molsym.models.builder import DEFAULTS

    data = config["data"]
    model = dict(config["model"])
    limit = data["statistics_structures"]
    if "elements" not in model:
        # every structure held in memory is scanned; streamed databases are sampled (give model.elements for them)
        elements = set()
        for split in (splits.train, splits.valid, splits.test):
            if split is not None:
                elements.update(dataset_elements(split, limit if is_streamed(split) else None))
        model["elements"] = sorted(elements)
    reference = energy_reference(data, splits.train, model["elements"])
    if reference is not None and "e0" not in model:
        table = reference.as_dict()
        missing = [z for z in model["elements"] if z not in table]
        if missing:
            raise ValueError(f"data.e0 gives no energy for element(s) {missing} present in the model")
        model["e0"] = {z: table[z] for z in model["elements"]}
    has_energy = config["loss"]["energy"] > 0 or data["energy_key"] is not None
    cutoff = float(model.get("cutoff", DEFAULTS["cutoff"]))
    samples = iter_samples(SampleView(splits.train), limit)
    statistics = compute_statistics(samples, reference, cutoff=cutoff, exclude_fixed=data["fixed_atoms"]) \
        if has_energy else None
    if statistics is not None:
        model.setdefault("shift", statistics.shift)
        model.setdefault("scale", statistics.scale if statistics.scale > 0 else 1.0)
        if statistics.avg_num_neighbours:
            model.setdefault("avg_num_neighbors", statistics.avg_num_neighbours)
    return model


def has_target(dataset: Dataset, key: str) -> bool:  # key: a molsym.data.keys target name
    """Whether the first structure of ``dataset`` carries label ``key``."""
    return len(dataset) > 0 and key in sample_of(dataset, 0).targets


__all__ = [
    "SampleView",
    "Splits",
    "build_splits",
    "dataset_elements",
    "energy_reference",
    "file_format",
    "has_target",
    "is_streamed",
    "model_config_from_data",
    "read_split",
    "sample_of",
    "structure_key",
    "target_spec",
]
