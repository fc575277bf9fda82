"""Dataset readers: extxyz (and anything ASE reads), ASE db, OC20 S2EF extxyz and aselmdb.

Every reader yields :class:`Sample` s (an ``ase.Atoms`` with targets in
molsym's shapes and units) and the datasets turn them into graph dicts with
the keys of :mod:`molsym.data.keys`, ready for :func:`molsym.data.graph.collate`.
"""
from molsym.data.readers.asedb import connect_readonly, read_db_samples, row_to_sample
from molsym.data.readers.dataset import AseDbDataset, AtomsDataset
from molsym.data.readers.extxyz import read_frames, read_samples, samples_from_atoms
from molsym.data.readers.oc20 import parse_s2ef_log, read_oc20_s2ef
from molsym.data.readers.oc20_synthetic import oc20_synthetic_frames, write_oc20_synthetic, write_s2ef_extxyz
from molsym.data.readers.references import LinearReference
from molsym.data.readers.sample import Sample, sample_from_atoms, to_graph
from molsym.data.readers.stats import DataStatistics, compute_statistics, fit_linear_reference, iter_samples
from molsym.data.readers.targets import TargetError, TargetSpec, isolated_atom_reference

__all__ = [
    "AseDbDataset",
    "AtomsDataset",
    "DataStatistics",
    "LinearReference",
    "Sample",
    "TargetError",
    "TargetSpec",
    "compute_statistics",
    "connect_readonly",
    "fit_linear_reference",
    "isolated_atom_reference",
    "iter_samples",
    "oc20_synthetic_frames",
    "parse_s2ef_log",
    "read_db_samples",
    "read_frames",
    "read_oc20_s2ef",
    "read_samples",
    "row_to_sample",
    "sample_from_atoms",
    "samples_from_atoms",
    "to_graph",
    "write_oc20_synthetic",
    "write_s2ef_extxyz",
]
