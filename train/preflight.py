"""Checks of every split before the first training step: structures, elements against the model, labels.

A run should fail in its first second, naming the file and frame, rather than
after an epoch (a bad validation frame) or the whole run (a bad test frame),
or with NaN weights (coincident atoms). :func:`validate_splits` reads every
structure of the train, validation and test splits held in memory, and an
evenly spaced sample of ``data.statistics_structures`` rows of each streamed
database (every row is still checked, with its file and row named, when its
graph is built), and checks:

* what :func:`molsym.data.graph.check_atoms` checks: atomic numbers in 1..118,
  finite positions and cell, a non-degenerate cell, a neighbour count the
  search can hold, no atoms closer than ``molsym.data.MIN_DISTANCE``;
* that the model knows every element (when ``model.elements`` is given; without
  it the elements are taken from all splits);
* the labels the loss weights ask for: reading a structure raises
  :class:`~molsym.data.readers.TargetError` (naming file, frame and key) for
  a missing or malformed required label, and reading happens here.
"""
from __future__ import annotations

import numpy as np

from molsym.data.graph import check_atoms
from molsym.data.readers import iter_samples
from molsym.data.readers.sample import sample_location


class DataCheckError(ValueError):
    """A split holds structures the model cannot train or be evaluated on; the message names file and frame."""


def validate_splits(splits, config: dict, cutoff: float) -> None:
    """Check every split of ``splits`` (:class:`molsym.train.data.Splits`) for ``config``; see the module docstring.

    Args:
        splits: train, valid and test datasets. config: the validated training config.
        cutoff: the model's cutoff, Å.
    Raises:
        StructureError, TargetError or DataCheckError (all ValueError) naming the split, file and frame.
    """
    from molsym.train.data import SampleView, is_streamed

    elements = config["model"].get("elements")
    limit = config["data"]["statistics_structures"]
    unknown: dict[int, str] = {}  # element -> first place it occurs
    for name, dataset in (("train", splits.train), ("valid", splits.valid), ("test", splits.test)):
        if dataset is None:
            continue
        for sample in iter_samples(SampleView(dataset), limit if is_streamed(dataset) else None):
            where = f"data.{name}: {sample_location(sample)}"
            check_atoms(sample.atoms, cutoff, where)
            if elements is not None:
                for z in np.unique(sample.atoms.numbers).tolist():
                    if z not in elements:
                        unknown.setdefault(int(z), where)
    if unknown:
        raise DataCheckError(_unknown_elements_message(unknown, elements))


def _unknown_elements_message(unknown: dict[int, str], elements) -> str:
    from ase.data import chemical_symbols

    found = "; ".join(f"Z = {z} ({chemical_symbols[z]}) first in {where}" for z, where in sorted(unknown.items()))
    return (f"the data hold element(s) that the model does not have (model.elements = {sorted(elements)}): "
            f"{found}. Add them to model.elements (or leave model.elements out to take them from the data), "
            f"or remove those structures")
