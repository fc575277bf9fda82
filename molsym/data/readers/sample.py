"""One labelled structure read from a file, and its conversion to a graph dict."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from molsym.data import keys as K
from molsym.data.graph import from_ase
from molsym.data.readers.targets import TargetSpec, fixed_mask, read_targets, tags_of


@dataclass
class Sample:
    """An ``ase.Atoms`` with its targets and bookkeeping.

    Attributes:
        atoms: the structure (positions Å, cell Å, pbc); its calculator is not used again.
        targets: molsym target key -> numpy array, shapes as in
            :mod:`molsym.data.readers.targets` (energy (1,), forces (n, 3),
            stress (1, 3, 3), hessian (3n, 3n), fixed (n,) bool, tags (n,) int64).
        meta: plain Python values: ``source`` (file), ``index`` (frame or row
            position in the file), and any of ``id``, ``sid``, ``fid``,
            ``ref_energy`` the file holds.
    """

    atoms: object
    targets: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)


def sample_from_atoms(atoms, spec: TargetSpec, where: str, extra_sources=(), meta=None) -> Sample:
    """Read ``spec``'s targets of one ``ase.Atoms``.

    Sources, in order: the stored calculator results, ``atoms.info``,
    ``atoms.arrays``, then ``extra_sources`` (e.g. a db row's
    key_value_pairs and data). ``where`` ("file, frame i") prefixes errors.
    """
    results = atoms.calc.results if atoms.calc is not None else {}
    sources = [results, atoms.info, atoms.arrays, *extra_sources]
    targets = read_targets(sources, atoms.numbers, atoms.cell.array, spec, where)
    if spec.fixed:
        targets[K.FIXED] = fixed_mask(atoms, where)
    if spec.tags:
        targets[K.TAGS] = tags_of(atoms, where)
    return Sample(atoms=atoms, targets=targets, meta=dict(meta or {}))


def sample_location(sample: Sample) -> str:
    """Where ``sample`` comes from, for messages: "FILE, frame I" or "FILE, row id R (position I)"."""
    meta = sample.meta
    source = meta.get("source", "structure")
    if "id" in meta:
        return f"{source}, row id {meta['id']} (position {meta.get('index')})"
    return f"{source}, frame {meta['index']}" if "index" in meta else str(source)


def to_graph(sample: Sample, cutoff: float, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Graph dict of ``sample``: :func:`molsym.data.graph.from_ase` plus its targets.

    Floating targets are cast to ``dtype``; ``fixed`` stays bool and ``tags`` int64.
    ``energy`` is (1,) and ``stress`` (1, 3, 3), so :func:`molsym.data.graph.collate`
    concatenates them into (B,) and (B, 3, 3). Errors name the file and frame
    (:func:`sample_location`).
    """
    graph = from_ase(sample.atoms, cutoff, dtype, where=sample_location(sample))
    for key, value in sample.targets.items():
        if key == K.FIXED:
            graph[key] = torch.as_tensor(value, dtype=torch.bool)
        elif key == K.TAGS:
            graph[key] = torch.as_tensor(value, dtype=torch.long)
        else:
            graph[key] = torch.tensor(value, dtype=dtype)
    return graph
