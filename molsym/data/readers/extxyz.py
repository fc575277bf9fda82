"""Read any file ASE reads (extxyz first) into labelled :class:`Sample` s.

Targets come from the stored calculator results first (``energy``,
``forces``, ``stress`` as ASE keeps them in a SinglePointCalculator, i.e.
``atoms.get_potential_energy()`` / ``get_forces(apply_constraint=False)``
semantics), then from ``atoms.info`` / ``atoms.arrays`` under the names of a
:class:`~molsym.data.readers.targets.TargetSpec` (e.g. ``REF_energy``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from molsym.data.readers.sample import Sample, sample_from_atoms
from molsym.data.readers.targets import TargetSpec

# info entries copied into Sample.meta when present.
META_KEYS = ("sid", "fid", "ref_energy", "config_type")


def read_frames(path, index=":", format: str | None = None) -> list:
    """``ase.io.read(path, index)`` as a list, with the file named in read errors."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        frames = ase.io.read(path, index=index, format=format)
    except Exception as error:  # ASE raises many types; name the file
        raise ValueError(f"{path}: ASE could not read it ({type(error).__name__}: {error})") from error
    return frames if isinstance(frames, list) else [frames]


def read_samples(path, spec: TargetSpec | None = None, index=":", format: str | None = None) -> list[Sample]:
    """Every frame of ``path`` (selected by ``index``, an ASE index string) with its targets.

    Args:
        path: any format ``ase.io.read`` understands (extxyz, traj, ...).
        spec: which targets and under which names (default: ASE's names, none required).
        index: ASE index (``":"`` all, ``":100"``, ``"-1"``, ...).
        format: ASE format name, if it cannot be guessed from the suffix.
    Returns:
        list of :class:`Sample`; ``meta`` has ``source``, ``index`` (position of
        the frame among those read) and any of ``sid``, ``fid``,
        ``ref_energy``, ``config_type`` found in ``atoms.info``.
    """
    spec = spec or TargetSpec()
    frames = read_frames(path, index=index, format=format)
    return samples_from_atoms(frames, spec, source=str(path))


def samples_from_atoms(frames: Iterable, spec: TargetSpec | None = None, source: str = "atoms") -> list[Sample]:
    """Like :func:`read_samples` for ``ase.Atoms`` already in memory."""
    spec = spec or TargetSpec()
    samples = []
    for position, atoms in enumerate(frames):
        meta = {"source": source, "index": position}
        meta.update({key: atoms.info[key] for key in META_KEYS if key in atoms.info})
        samples.append(sample_from_atoms(atoms, spec, f"{source}, frame {position}", meta=meta))
    return samples
