"""OC20 S2EF data in its extxyz distribution format.

Each ``<name>.extxyz`` (or ``.extxyz.xz``) holds frames whose header reads
``Properties=species:S:1:pos:R:3:move_mask:L:1:tags:I:1:forces:R:3:energies:R:1
energy=... pbc="T T T"``: raw total DFT energy (eV) and forces (eV/Å) in the
stored calculator, ``tags`` (0 subsurface, 1 surface, 2 adsorbate) and
``move_mask`` (False = fixed; ASE turns it into a FixAtoms constraint). A
companion ``<name>.txt`` (or ``.txt.xz``) has one line per frame,
``random<sid>,frame<fid>,<reference energy>`` (test splits: no third field);
subtracting that reference energy from the total energy gives the adsorption
energy that OC20 S2EF trains on.

The LMDB distribution (``.aselmdb``) is read by
:class:`molsym.data.readers.dataset.AseDbDataset` with :meth:`TargetSpec.oc20`;
its rows keep ``sid``, ``fid`` and ``ref_energy`` in ``data``.
"""
from __future__ import annotations

import lzma
from dataclasses import dataclass, replace
from pathlib import Path

from molsym.data.readers.extxyz import read_frames, samples_from_atoms
from molsym.data.readers.sample import Sample
from molsym.data.readers.targets import TargetSpec

REFERENCE_KEY = "ref_energy"


@dataclass(frozen=True)
class FrameLog:
    """One line of an S2EF ``.txt`` log: system id, frame id, reference energy (eV, or None)."""

    sid: int
    fid: int
    ref_energy: float | None


def parse_s2ef_log(path) -> list[FrameLog]:
    """Read an S2EF frame log (``.txt`` or ``.txt.xz``): ``random<sid>,frame<fid>[,<eV>]`` per line."""
    path = Path(path)
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    entries = []
    for number, line in enumerate(lines, start=1):
        fields = line.split(",")
        try:
            if len(fields) not in (2, 3) or not fields[0].startswith("random") or not fields[1].startswith("frame"):
                raise ValueError("expected 'random<sid>,frame<fid>[,<reference energy>]'")
            sid = int(fields[0][len("random"):])
            fid = int(fields[1][len("frame"):])
            ref = float(fields[2]) if len(fields) == 3 else None
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: cannot parse '{line}': {error}") from None
        entries.append(FrameLog(sid, fid, ref))
    return entries


def default_log_path(extxyz_path) -> Path | None:
    """The ``.txt`` / ``.txt.xz`` beside ``name.extxyz[.xz]``, if it exists."""
    path = Path(extxyz_path)
    stem = path.name
    for suffix in (".xz", ".extxyz", ".xyz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    for candidate in (path.with_name(stem + ".txt"), path.with_name(stem + ".txt.xz")):
        if candidate.exists():
            return candidate
    return None


def read_oc20_s2ef(
    path,
    log_path=None,
    spec: TargetSpec | None = None,
    subtract_reference: bool = False,
    index=":",
) -> list[Sample]:
    """Frames of an OC20 S2EF extxyz with tags, fixed atoms and (from the log) sid, fid and ref_energy.

    Args:
        path: the ``.extxyz`` (or ``.extxyz.xz``) file.
        log_path: its frame log; default: the ``.txt`` beside it if there is
            one, else no sid/fid/reference energies.
        spec: targets (default :meth:`TargetSpec.oc20`: energy, forces, tags, fixed).
        subtract_reference: subtract each frame's reference energy from its
            energy (adsorption energy, as OC20 S2EF); needs a log with a third column.
        index: ASE index of the frames to read (the log is indexed alike).
    Returns:
        list of :class:`Sample`; ``meta`` has ``sid``, ``fid``, ``ref_energy`` when a log was read.
    """
    spec = spec or TargetSpec.oc20()
    if subtract_reference:
        spec = replace(spec, reference_key=REFERENCE_KEY)
    frames = read_frames(path, index=":")
    log_path = Path(log_path) if log_path is not None else default_log_path(path)
    if log_path is not None:
        entries = parse_s2ef_log(log_path)
        if len(entries) != len(frames):
            raise ValueError(f"{log_path}: {len(entries)} lines for {len(frames)} frames in {path}")
        for atoms, entry in zip(frames, entries):
            atoms.info["sid"], atoms.info["fid"] = entry.sid, entry.fid
            if entry.ref_energy is not None:
                atoms.info[REFERENCE_KEY] = entry.ref_energy
    elif subtract_reference:
        raise ValueError(f"{path}: subtract_reference needs the frame log (.txt) with reference energies; "
                         f"none found beside the file, pass log_path=")
    selected = _select(frames, index)
    samples = samples_from_atoms([atoms for _, atoms in selected], spec, source=str(path))
    for (position, _), sample in zip(selected, samples):
        sample.meta["index"] = position
    return samples


def _select(frames: list, index) -> list[tuple[int, object]]:
    """Apply an ASE-style index (int, slice or string) to ``frames``, keeping original positions."""
    positions = list(range(len(frames)))
    if isinstance(index, str):
        from ase.io.formats import string2index

        index = string2index(index)
    chosen = positions[index]
    chosen = chosen if isinstance(chosen, list) else [chosen]
    return [(p, frames[p]) for p in chosen]
