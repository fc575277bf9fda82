"""Export a Potential to a self-contained TorchScript file for C++ hosts (the LAMMPS pair style).

``molsym export MODEL.pt OUT.pt`` (or :func:`export`) writes one TorchScript module whose
``forward(positions, species, edge_index, edge_shift, nlocal, paired=False, stage_pairs=None)``
returns

* ``energy``: () the sum of the atomic energies of the first ``nlocal`` atoms only (eV);
* ``energies``: (N,) atomic energies of all N atoms (eV; only the first ``nlocal`` are complete
  when the rest are ghosts);
* ``forces``: (N, 3) -d energy / d positions on every atom, ghosts included (eV/Å): a host
  adds the forces on ghosts to the atoms they image (LAMMPS' reverse communication);
* ``virial``: (3, 3) W = -sum over edges of r_ij ⊗ d energy / d r_ij (eV), symmetric; for a
  periodic cell W = -V sigma with sigma the stress in ASE's convention.

Inputs: positions (N, 3) Å in the model's dtype; species (N,) int64 indices into the model's
element list (``elements``); edge_index (2, E) int64 directed edges (i, j), j a neighbour of i
within ``cutoff``, both directions of every pair among the atoms given (ghosts included);
edge_shift (E, 3) Å, added to pos[j] - pos[i] (zeros when ghosts are explicit images);
paired: the edges come in consecutive reverse pairs (edge 2p + 1 is edge 2p reversed, with the
negated shift; checked), so that everything that depends on |r_ij| only (radial basis and the
radial networks, most of TensorNet's cost) is evaluated once per pair, as the eager model does;
stage_pairs (with paired): one pair count per stage of the model (its embedding, then each
interaction; ``stage_reach`` in the metadata), the edge list's pairs ordered by the hop distance
of their nearer atom from the local atoms (:func:`staged_pairs`): stage s evaluates only the
first stage_pairs[s] pairs, those with that distance <= stage_reach[s], which are all that the
local energies need from it (the last interaction: the edges into local atoms). The local
energies, all forces and the virial are unchanged; the energies of ghosts are not complete.

Why TorchScript rather than an AOTInductor package: a LAMMPS domain changes its atom and
edge counts every step, and the host needs forces, i.e. autograd, from C++. A TorchScript
module traced once is shape-generic and its ``forward`` calls ``torch.autograd.grad`` inside
LibTorch with no Python runtime; AOTInductor compiles a forward graph with bounded symbolic
shapes and no autograd at run time.

How it is built: the model's atomic energies are traced (``torch.jit.trace``) as a function of
(positions, species, edge_index, edge_shift), with the geometry evaluated on every directed
edge (no pairing of reverse edges: that bookkeeping is data-dependent, and a trace would
freeze it), and wrapped in a scripted module that differentiates them. A trace records one
path through the Python code, so everything that depends on the example's sizes must be
shape-generic (TensorNet's chunked aggregation runs as one pass while tracing); the traced
module is checked against the eager model on a second structure of other atom and edge
counts before anything is written. TorchScript's optimising (profiling) executor is
disabled wherever the file is run (:func:`load_exported`, the pair style): it rewrote some
graphs into ones with wrong gradients.

Metadata, as attributes of the module and as ``molsym.json`` among its extra files:
``elements`` (atomic numbers), ``element_symbols``, ``cutoff`` (Å), ``message_hops`` (graph
hops of the receptive field: a host needs ghost atoms out to ``message_hops * cutoff``),
``stage_reach`` (per stage, the hop distance from the local atoms that its results must reach),
``dtype`` ("float32" or "float64") and ``molsym_version``.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from typing import List, Optional, Tuple

import numpy as np
import torch
from ase.data import chemical_symbols
from torch import nn

from molsym.data import keys as K
from molsym.models.dtypes import resolve_dtype
from molsym.models.snapshot import frozen_copy
from molsym.nn.geometry import PairRows

METADATA_FILE = "molsym.json"


def message_hops(model) -> int:
    """Graph hops of a Potential's receptive field: its interaction layers plus the embedding's
    (``message_hops`` of the embedding module: 1 when it sums over neighbours; taken as 1 when
    undeclared). An atomic energy depends on atoms at most this many edges away."""
    return len(model.interactions) + int(getattr(model.embedding, "message_hops", 1))


def consecutive_pairs(edge_index: torch.Tensor) -> PairRows:
    """Pair rows of edges (2, E) given in consecutive reverse pairs (edge 2p + 1 = edge 2p reversed)."""
    edges = torch.arange(edge_index.size(1), device=edge_index.device)
    return PairRows(edges[0::2], torch.div(edges, 2, rounding_mode="floor"), edges.remainder(2) == 1)


def one_structure(model, positions, species) -> dict:
    """The graph keys of one open structure, edges aside: positions, batch, cell, atomic numbers."""
    return {K.POSITIONS: positions, K.BATCH: torch.zeros_like(species), K.CELL: positions.new_zeros(1, 3, 3),
            K.ATOMIC_NUMBERS: model.z_of_species.index_select(0, species)}


class AtomicEnergies(nn.Module):
    """Atomic energies (N,) eV of a Potential from (positions (N, 3) Å, species (N,) int64,
    edge_index (2, E) int64, edge_shift (E, 3) Å), one structure. The function that :func:`export`
    traces, twice: ``paired=False`` evaluates the geometry and radial networks on every directed
    edge (any edge list); ``paired=True`` takes edges in consecutive reverse pairs (edge 2p + 1 is
    edge 2p reversed, with the negated shift) and evaluates them once per pair, as the eager model
    does on the symmetric lists of ``molsym.data``."""

    def __init__(self, model, paired: bool = False):
        super().__init__()
        self.model = model
        self.paired = paired

    def forward(self, positions, species, edge_index, edge_shift):
        model = self.model
        graph = {**one_structure(model, positions, species), K.EDGE_INDEX: edge_index, K.EDGE_SHIFT: edge_shift}
        if self.paired:
            rows = consecutive_pairs(edge_index)
        else:
            rows = PairRows(None, None, None)
        geometry = model.geometry(graph, rows)
        return model.evaluate(species, geometry, graph)[K.ATOMIC_ENERGIES]


def stage_reach(model) -> list[int]:
    """Per stage of a Potential (its embedding, then each interaction), the largest hop distance
    from the local atoms of the nodes whose output of that stage a local atomic energy needs:
    interaction k of K feeds nodes at most K - k hops away, the embedding those at most K. A
    stage needs exactly the edges into those nodes: the pairs whose nearer atom is within reach."""
    layers = len(model.interactions)
    return [layers] + [layers - k for k in range(1, layers + 1)]


class StagedEnergies(nn.Module):
    """Atomic energies like :class:`AtomicEnergies` (paired edges), with each stage given only
    the first pairs of the edge list: ``stage_pairs`` (S,) int64, pairs (edges 2p, 2p + 1) that
    stage s evaluates, for a list whose pairs are ordered by the hop distance of their nearer
    atom from the local atoms (:func:`stage_reach`). The first ``nlocal`` energies are those of
    the whole list; a stage then skips the messages into atoms whose result no local energy reads
    (a multi-rank host's ghost atoms then cost the later stages nothing)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, positions, species, edge_index, edge_shift, stage_pairs):
        model = self.model
        base = one_structure(model, positions, species)
        pair_of_edge = torch.div(torch.arange(edge_index.size(1), device=edge_index.device), 2, rounding_mode="floor")
        geometries = []
        for s in range(len(model.interactions) + 1):
            keep = pair_of_edge < stage_pairs[s]
            stage_index, stage_shift = edge_index[:, keep], edge_shift[keep]
            geometries.append(model.geometry({**base, K.EDGE_INDEX: stage_index, K.EDGE_SHIFT: stage_shift},
                                             consecutive_pairs(stage_index)))
        graph = {**base, K.EDGE_INDEX: edge_index, K.EDGE_SHIFT: edge_shift}
        return model.evaluate(species, geometries[0], graph, stage_geometries=geometries)[K.ATOMIC_ENERGIES]


class ExportedPotential(nn.Module):
    """The scripted module of an export file (see the module docstring for ``forward``)."""

    def __init__(self, atomic_energies: torch.jit.ScriptModule, paired_energies: torch.jit.ScriptModule,
                 staged_energies: torch.jit.ScriptModule, elements: List[int], cutoff: float, hops: int,
                 reach: List[int], dtype: str, version: str):
        super().__init__()
        self.atomic_energies = atomic_energies
        self.paired_energies = paired_energies
        self.staged_energies = staged_energies
        self.stage_reach: List[int] = list(reach)
        self.elements: List[int] = list(elements)
        self.element_symbols: List[str] = [chemical_symbols[z] for z in elements]
        self.cutoff: float = float(cutoff)
        self.message_hops: int = int(hops)
        self.dtype_name: str = dtype
        self.molsym_version: str = version

    def forward(self, positions: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                edge_shift: torch.Tensor, nlocal: int, paired: bool = False,
                stage_pairs: Optional[List[int]] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = positions.size(0)
        if positions.dim() != 2 or positions.size(1) != 3:
            raise ValueError("positions must have shape (N, 3)")
        if species.dim() != 1 or species.size(0) != n:
            raise ValueError("species must have shape (N,), one element index per atom")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError("edge_index must have shape (2, E)")
        if edge_shift.dim() != 2 or edge_shift.size(1) != 3 or edge_shift.size(0) != edge_index.size(1):
            raise ValueError("edge_shift must have shape (E, 3), one shift per edge")
        if nlocal < 0 or nlocal > n:
            raise ValueError("nlocal must lie in 0..N")
        if n > 0 and (int(species.min()) < 0 or int(species.max()) >= len(self.elements)):
            raise ValueError("species indices must lie in 0..len(elements)-1")
        if edge_index.size(1) > 0 and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
            raise ValueError("edge_index refers to an atom outside 0..N-1")
        if paired:
            ok = edge_index.size(1) % 2 == 0
            if ok:
                ok = bool(torch.equal(edge_index[:, 1::2], edge_index[:, 0::2].flip(0))) and \
                    bool(torch.equal(edge_shift[1::2], -edge_shift[0::2]))
            if not ok:
                raise ValueError("paired=True needs edges in consecutive reverse pairs: edge 2p + 1 = edge 2p "
                                 "reversed, with the negated shift")
        if stage_pairs is not None:
            if not paired:
                raise ValueError("stage_pairs needs paired=True (edges in consecutive reverse pairs)")
            if len(stage_pairs) != len(self.stage_reach):
                raise ValueError("stage_pairs needs one pair count per stage (len(stage_reach))")
            for s in range(len(stage_pairs)):
                if stage_pairs[s] < 0 or 2 * stage_pairs[s] > edge_index.size(1):
                    raise ValueError("stage_pairs must lie in 0..E/2")
        positions = positions.detach().requires_grad_(True)
        edge_shift = edge_shift.detach().requires_grad_(True)
        if stage_pairs is not None and 2 * min(stage_pairs) < edge_index.size(1):
            atomic = self.staged_energies(positions, species, edge_index, edge_shift,
                                          torch.tensor(stage_pairs, dtype=torch.long))
        elif paired:  # (also when every stage takes every pair, as on a host's single domain)
            atomic = self.paired_energies(positions, species, edge_index, edge_shift)
        else:
            atomic = self.atomic_energies(positions, species, edge_index, edge_shift)
        energy = atomic[:nlocal].sum()
        forces = torch.zeros_like(positions)
        virial = positions.new_zeros(3, 3)
        if energy.requires_grad:
            # d E / d shift_ij = d E / d r_ij, since r_ij = pos[j] - pos[i] + shift_ij
            grads = torch.autograd.grad([energy], [positions, edge_shift], allow_unused=True)
            gradient, edge_gradient = grads[0], grads[1]
            if gradient is not None:
                forces = -gradient
            if edge_gradient is not None:
                with torch.no_grad():
                    vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) \
                        + edge_shift
                    virial = -(vectors.t() @ edge_gradient)
                    virial = 0.5 * (virial + virial.t())
        return energy.detach(), atomic.detach(), forces.detach(), virial


def export(model, path: str | os.PathLike, dtype="float64") -> dict:
    """Write ``model`` (a ``molsym.Potential``) as a TorchScript file at ``path`` in ``dtype``
    ("float64" or "float32"), atomically. Returns the metadata written.

    Raises RuntimeError when the traced module does not reproduce the eager model on a
    check structure (a Python path that a trace cannot follow), before writing anything.
    """
    from molsym import __version__

    torch_dtype = resolve_dtype(dtype)
    dtype_name = "float64" if torch_dtype == torch.float64 else "float32"
    frozen = frozen_copy(model, torch.device("cpu"), torch_dtype)
    wrapper, paired_wrapper = AtomicEnergies(frozen), AtomicEnergies(frozen, paired=True)
    example = example_inputs(frozen.elements, frozen.cutoff, torch_dtype, copies=2, seed=0)
    with _quiet_jit():
        # the tracer warns about every Python value it reads off a tensor; those it meets here are
        # fixed sizes (channels, degrees, parities), and the check below catches any that is not
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        traced_paired = torch.jit.trace(paired_wrapper, example, check_trace=False)
        reach = stage_reach(frozen)
        traced_staged = torch.jit.trace(StagedEnergies(frozen), (*example, example_stage_pairs(example, reach)),
                                        check_trace=False)
        scripted = _script(ExportedPotential(traced, traced_paired, traced_staged, frozen.elements, frozen.cutoff,
                                             message_hops(frozen), reach, dtype_name, __version__))
    _check_against_eager(scripted, wrapper, frozen, torch_dtype)
    metadata = {"elements": frozen.elements, "element_symbols": [chemical_symbols[z] for z in frozen.elements],
                "cutoff": frozen.cutoff, "message_hops": message_hops(frozen), "stage_reach": reach, "dtype": dtype_name,
                "molsym_version": __version__, "families": list(frozen.family_names)}
    _atomic_write(scripted, path, {METADATA_FILE: json.dumps(metadata, sort_keys=True)})
    return metadata


def _script(module: ExportedPotential) -> torch.jit.ScriptModule:
    with _quiet_jit():
        return torch.jit.script(module)


@contextlib.contextmanager
def _quiet_jit():
    """Silence torch's notices that TorchScript's entry points are deprecated (they still work, and
    LibTorch hosts such as LAMMPS read nothing newer; see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
        yield


def example_inputs(elements: list[int], cutoff: float, dtype: torch.dtype, copies: int, seed: int):
    """A small cluster with ``copies`` atoms of every element on a jittered grid of 1.3 Å spacing:
    (positions, species, edge_index, edge_shift) with every directed pair closer than ``cutoff``,
    in consecutive reverse pairs."""
    species = np.repeat(np.arange(len(elements)), copies)
    rng = np.random.default_rng(seed)
    rng.shuffle(species)
    side = int(np.ceil(len(species) ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:len(species)]
    positions = 1.3 * grid + 0.15 * rng.uniform(-1, 1, (len(species), 3))
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    i, j = np.nonzero(np.triu(distance < cutoff, k=1))
    i, j = np.stack((i, j), 1).reshape(-1), np.stack((j, i), 1).reshape(-1)  # reverse pairs, consecutive
    return (torch.tensor(positions, dtype=dtype), torch.tensor(species, dtype=torch.long),
            torch.tensor(np.stack((i, j)), dtype=torch.long), torch.zeros(len(i), 3, dtype=dtype))


def _check_against_eager(scripted, wrapper: AtomicEnergies, model, dtype: torch.dtype) -> None:
    """Compare the exported module with the eager atomic energies and forces on a structure with
    other atom and edge counts than the traced example; RuntimeError if they differ."""
    positions, species, edge_index, edge_shift = example_inputs(model.elements, model.cutoff, dtype, copies=3, seed=1)
    nlocal = max(1, len(species) - 2)
    for paired in (False, True):
        with optimisation_disabled():
            _, atomic, forces, _ = scripted(positions, species, edge_index, edge_shift, nlocal, paired)
        _compare(atomic, forces, wrapper, positions, species, edge_index, edge_shift, nlocal, dtype)
    # staged: a few local atoms, so that the stages differ; only the local energies are complete
    nlocal = max(1, len(species) // 4)
    order, counts = staged_pairs(edge_index, nlocal, scripted.stage_reach)
    edge_index, edge_shift = edge_index[:, order], edge_shift[order]
    with optimisation_disabled():
        _, atomic, forces, _ = scripted(positions, species, edge_index, edge_shift, nlocal, True, counts)
    _compare(atomic, forces, wrapper, positions, species, edge_index, edge_shift, nlocal, dtype, compared=nlocal)


def example_stage_pairs(example, reach: list[int]) -> torch.Tensor:
    """Pair counts per stage for tracing :class:`StagedEnergies` on ``example`` (the first atom local)."""
    _, counts = staged_pairs(example[2], 1, reach)
    return torch.tensor(counts, dtype=torch.long)


def staged_pairs(edge_index: torch.Tensor, nlocal: int, reach: list[int]) -> tuple[torch.Tensor, list[int]]:
    """For edges (2, E) in consecutive reverse pairs among nodes whose first ``nlocal`` are local:
    the edge order (E,) that sorts the pairs by the hop distance of their nearer atom from the
    local atoms (stable), and per stage the number of pairs whose nearer atom is within that
    stage's ``reach`` (:func:`stage_reach`): ``stage_pairs`` for the exported module."""
    n = int(edge_index.max()) + 1 if edge_index.numel() else nlocal
    hop = torch.full((max(n, nlocal),), max(reach) + 1, dtype=torch.long)  # beyond every reach until reached
    hop[:nlocal] = 0
    i, j = edge_index
    for depth in range(max(reach)):
        reached = (hop.index_select(0, i) == depth) & (hop.index_select(0, j) > depth + 1)
        hop[j[reached]] = depth + 1
    nearer = torch.minimum(hop.index_select(0, i[0::2]), hop.index_select(0, j[0::2]))
    pairs = torch.sort(nearer, stable=True).indices
    order = torch.stack((2 * pairs, 2 * pairs + 1), 1).reshape(-1)
    return order, [int((nearer <= r).sum()) for r in reach]


def _compare(atomic, forces, wrapper, positions, species, edge_index, edge_shift, nlocal, dtype,
             compared: int | None = None) -> None:
    with torch.enable_grad():
        pos = positions.clone().requires_grad_(True)
        reference = wrapper(pos, species, edge_index, edge_shift)
        (gradient,) = torch.autograd.grad(reference[:nlocal].sum(), pos, allow_unused=True)
    reference_forces = torch.zeros_like(forces) if gradient is None else -gradient.detach()
    tolerance = 1e-8 if dtype == torch.float64 else 1e-3
    scale = 1.0 + float(reference.detach().abs().max()) + float(reference_forces.abs().max())
    atomic, reference = atomic[:compared], reference.detach()[:compared]
    error = max(float((atomic - reference).abs().max()), float((forces - reference_forces).abs().max()))
    if not error <= tolerance * scale:
        raise RuntimeError(f"the traced model differs from the eager one by {error:.3g} on a check structure "
                           "with other atom and edge counts: some code path depends on sizes in a way "
                           "torch.jit.trace cannot follow")


def optimisation_disabled():
    """Context: run TorchScript modules without the graph executor's optimising (profiling) passes."""
    return torch.jit.optimized_execution(False)


def _atomic_write(module, path, extra_files: dict) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with _quiet_jit():
            torch.jit.save(module, tmp, _extra_files=extra_files)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ExportedModel:
    """An export file loaded in Python: ``model(positions, species, edge_index, edge_shift, nlocal, paired,
    stage_pairs)``
    -> (energy, energies, forces, virial) as in the module docstring, run without TorchScript's
    optimising executor. ``metadata``: the dict stored with the file; ``module``: the
    ``torch.jit.ScriptModule``."""

    def __init__(self, module, metadata: dict):
        self.module, self.metadata = module, metadata

    def __call__(self, positions, species, edge_index, edge_shift, nlocal: int, paired: bool = False,
                 stage_pairs: list[int] | None = None):
        stage_pairs = None if stage_pairs is None else [int(count) for count in stage_pairs]
        with optimisation_disabled():
            return self.module(positions, species, edge_index, edge_shift, int(nlocal), bool(paired), stage_pairs)


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """Load a file written by :func:`export` (CPU)."""
    extra = {METADATA_FILE: ""}
    with _quiet_jit():
        module = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    if not extra[METADATA_FILE]:
        raise ValueError(f"{os.fspath(path)!r} is not a molsym export (no {METADATA_FILE} inside)")
    return ExportedModel(module, json.loads(extra[METADATA_FILE]))
