"""Torch datasets of graph dicts: in memory (:class:`AtomsDataset`) and streamed from ASE dbs (:class:`AseDbDataset`).

Both return, per index, :func:`molsym.data.graph.from_ase` ``(atoms, cutoff,
dtype)`` plus the targets under :mod:`molsym.data.keys` names (energy (1,),
forces (n, 3), stress (1, 3, 3), hessian (3n, 3n), fixed (n,) bool, tags (n,)
int64), so a ``DataLoader(dataset, collate_fn=molsym.data.graph.collate)``
yields batches. Targets that a structure lacks are absent from its dict; a
batch needs the same keys in every structure, so require the targets you
train on (``TargetSpec(required=...)``).

Both also give :meth:`sample` (the :class:`Sample`, no graph) for statistics
(:mod:`molsym.data.readers.stats`).
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from molsym.data.readers.asedb import DB_TYPES, close_shared, db_type, open_shared, read_db_samples, row_ids, row_to_sample
from molsym.data.readers.extxyz import read_samples
from molsym.data.readers.sample import Sample, to_graph
from molsym.data.readers.targets import TargetSpec


class AtomsDataset(Dataset):
    """Map-style dataset over labelled structures held in memory.

    Args:
        samples: the structures (see :func:`~molsym.data.readers.extxyz.read_samples`).
        cutoff: neighbour-list radius, Å.
        dtype: floating dtype of positions, cell, shifts and targets.
        precompute: build every graph once here (faster epochs, more memory);
            otherwise each ``__getitem__`` builds its graph.
    """

    def __init__(self, samples: Sequence[Sample], cutoff: float, dtype: torch.dtype = torch.float64,
                 precompute: bool = False):
        self.samples = list(samples)
        self.cutoff = float(cutoff)
        self.dtype = dtype
        self._graphs = [to_graph(s, self.cutoff, dtype) for s in self.samples] if precompute else None

    @classmethod
    def from_file(cls, path, cutoff: float, dtype: torch.dtype = torch.float64, spec: TargetSpec | None = None,
                  index=":", precompute: bool = False) -> "AtomsDataset":
        """Read ``path`` whole: an ASE db (``.db``, ``.json``, ``.aselmdb``) row by row, anything else with ``ase.io.read``."""
        if Path(path).suffix.lower() in DB_TYPES:
            samples = read_db_samples(path, spec)
            samples = [samples[i] for i in _positions(len(samples), index)]
        else:
            samples = read_samples(path, spec, index=index)
        return cls(samples, cutoff, dtype, precompute)

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> Sample:
        return self.samples[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._graphs is not None:  # copies, so that a caller's in-place change never reaches the cache
            return {key: value.clone() for key, value in self._graphs[index].items()}
        return to_graph(self.samples[index], self.cutoff, self.dtype)


class AseDbDataset(Dataset):
    """Streaming dataset over one or more ASE dbs: ``__getitem__`` reads one row and builds its graph.

    Only row ids are kept in memory (8 bytes a row). The dataset holds no
    database handle: each access asks :func:`~molsym.data.readers.asedb.open_shared`
    for this process's read-only, lock-free handle on the file (opened on
    first use, one per file and process, released and reopened after a
    fork), so the dataset pickles as paths and ids and works with
    ``DataLoader`` workers (fork or spawn) and DDP ranks.

    Args:
        paths: a db file, a directory (every ``*.aselmdb`` and ``*.db`` file in
            it, sorted by name) or a list of files; indices run over
            the files in order.
        cutoff: neighbour-list radius, Å.
        dtype: floating dtype of the graph.
        spec: targets (default :meth:`TargetSpec.oc20`).
        db_type_name: force the ASE db type ("aselmdb", "db", "json") of every file.

    Row access is by id: a key lookup in an LMDB, an indexed query in SQLite.
    A ``.json`` db is parsed whole on every access, so it suits small files only.
    """

    def __init__(self, paths, cutoff: float, dtype: torch.dtype = torch.float64, spec: TargetSpec | None = None,
                 db_type_name: str | None = None):
        self.paths = _expand_paths(paths)
        self.kinds = [db_type(p, db_type_name) for p in self.paths]
        self.cutoff = float(cutoff)
        self.dtype = dtype
        self.spec = spec or TargetSpec.oc20()
        self.ids = [row_ids(open_shared(path, kind), kind) for path, kind in zip(self.paths, self.kinds)]
        self._ends = np.cumsum([len(ids) for ids in self.ids]).tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def locate(self, index: int) -> tuple[int, int]:
        """(file number, row id) of dataset position ``index``."""
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(f"index {index} out of range for a dataset of {length} structures")
        file_number = bisect.bisect_right(self._ends, index)
        start = self._ends[file_number - 1] if file_number else 0
        return file_number, int(self.ids[file_number][index - start])

    def sample(self, index: int) -> Sample:
        """Read row ``index`` (one database access) as a :class:`Sample`."""
        file_number, row_id = self.locate(index)
        row = self._db(file_number).get(id=row_id)
        return row_to_sample(row, self.spec, str(self.paths[file_number]), index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return to_graph(self.sample(index), self.cutoff, self.dtype)

    def _db(self, file_number: int):
        return open_shared(self.paths[file_number], self.kinds[file_number])

    def close(self) -> None:
        """Close this process's handles on the dataset's files (they reopen on the next access)."""
        for path in self.paths:
            close_shared(path)


def _expand_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    expanded = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".aselmdb", ".db"))
            if not found:
                raise FileNotFoundError(f"{path}: directory holds no .aselmdb or .db file")
            expanded.extend(found)
        elif path.exists():
            expanded.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such database or directory")
    if not expanded:
        raise ValueError("AseDbDataset needs at least one database file")
    return expanded


def _positions(length: int, index) -> list[int]:
    if isinstance(index, str):
        from ase.io.formats import string2index

        index = string2index(index)
    chosen = list(range(length))[index]
    return chosen if isinstance(chosen, list) else [chosen]
