"""The TorchScript export (molsym.export) equals the Python model, for every registered family.

Each export is loaded back with ``torch.jit.load`` and run without TorchScript's optimising
executor, on inputs of other sizes than the traced example: a 3BPA molecule, a periodic Cu
crystal through lattice shifts, and the same crystal as a host such as LAMMPS presents it
(explicit ghost images out to the receptive field, energies summed over the first nlocal
atoms, ghost forces folded back onto their owners). Float64 results agree with the eager model
to 1e-10 (eV, eV/Å, eV): the same operations, summed in other orders.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

import molsym
from molsym.data import keys as K
from molsym.data.neighbours import neighbour_list
from molsym.export import (METADATA_FILE, export, load_exported, message_hops, optimisation_disabled, stage_reach,
                           staged_pairs)
from molsym.models.derivatives import energy_forces_stress
from molsym.nn.geometry import reverse_edges
from molsym.nn.interactions import tensornet
from molsym.train.cli import main as cli_main
from conftest import MODEL_CONFIGS, bpa_frames, make_model, periodic_copper

TOLERANCE = 1e-10
# a short cutoff keeps the ghost shell of up to 3 hops small (one export per family serves all tests)
CUTOFF = 3.0
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (model, loaded ScriptModule), exported once per family."""
    cache = {}

    def get(name):
        if name not in cache:
            model = make_model(name, cutoff=CUTOFF)
            path = tmp_path_factory.mktemp("export") / f"{name}.pt"
            export(model, path)
            cache[name] = model, torch.jit.load(str(path))
        return cache[name]

    return get


def run(module, graph_or_inputs, nlocal, paired=False):
    """(energy, energies, forces, virial) of the loaded module, optimising executor off; with
    ``paired`` the edges are first put in consecutive reverse pairs."""
    if paired:
        graph_or_inputs = in_reverse_pairs(*graph_or_inputs)
    with optimisation_disabled():
        return [t.detach() for t in module(*graph_or_inputs, nlocal, paired)]


def in_reverse_pairs(positions, species, edge_index, edge_shift):
    """The same inputs with the edges reordered so that edge 2p + 1 is edge 2p reversed."""
    reverse = reverse_edges(edge_index, edge_shift)
    assert reverse is not None, "the edge list is not symmetric"
    first = torch.nonzero(torch.arange(len(reverse)) < reverse).squeeze(-1)
    order = torch.stack((first, reverse[first]), 1).reshape(-1)
    return positions, species, edge_index[:, order], edge_shift[order]


PAIRED = pytest.mark.parametrize("paired", [False, True], ids=["directed", "paired"])


def inputs(model, graph):
    return graph[K.POSITIONS], model.species(graph[K.ATOMIC_NUMBERS]), graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT]


def assert_close(actual, expected, what):
    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    error = float((actual - expected).abs().max()) if actual.numel() else 0.0
    assert error < TOLERANCE, f"{what}: exported and Python model differ by {error:.3g}"


def partial_reference(model, graph, nlocal):
    """Energy of the first nlocal atoms, all atomic energies, and -dE_local/dpos on all atoms."""
    positions = graph[K.POSITIONS].clone().requires_grad_(True)
    atomic = model({**graph, K.POSITIONS: positions})[K.ATOMIC_ENERGIES]
    energy = atomic[:nlocal].sum()
    (gradient,) = torch.autograd.grad(energy, positions)
    return energy.detach(), atomic.detach(), -gradient


@PAIRED
@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_molecule_all_atoms_local(exported, name, paired):
    model, module = exported(name)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff)
    energy, atomic, forces, virial = run(module, inputs(model, graph), graph[K.POSITIONS].shape[0], paired)
    reference = energy_forces_stress(model, graph)
    assert_close(energy, reference[K.ENERGY][0], "energy")
    assert_close(atomic, reference[K.ATOMIC_ENERGIES], "atomic energies")
    assert_close(forces, reference[K.FORCES], "forces")
    # an isolated, translation-invariant system: W = sum_i r_i ⊗ F_i
    assert_close(virial, graph[K.POSITIONS].T @ reference[K.FORCES].detach(), "virial")


@PAIRED
@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_molecule_with_ghost_atoms(exported, name, paired):
    """The last atoms play ghosts: their energies are left out, forces on them are kept."""
    model, module = exported(name)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff)
    nlocal = graph[K.POSITIONS].shape[0] - 7
    energy, atomic, forces, _ = run(module, inputs(model, graph), nlocal, paired)
    ref_energy, ref_atomic, ref_forces = partial_reference(model, graph, nlocal)
    assert_close(energy, ref_energy, "local energy")
    assert_close(atomic, ref_atomic, "atomic energies")
    assert_close(forces, ref_forces, "forces on local and ghost atoms")
    assert float(forces[nlocal:].abs().max()) > 1e-6  # ghosts do feel forces


def crystal_reference(model, crystal):
    graph = molsym.from_ase(crystal, model.cutoff)
    reference = energy_forces_stress(model, graph, stress=True)
    volume = abs(np.linalg.det(crystal.cell.array))
    return graph, reference, -volume * reference[K.STRESS][0].detach()


@PAIRED
@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_periodic_copper_through_shifts(exported, name, paired):
    model, module = exported(name)
    crystal = periodic_copper(repeat=1, shear=0.1)
    graph, reference, virial_reference = crystal_reference(model, crystal)
    energy, atomic, forces, virial = run(module, inputs(model, graph), len(crystal), paired)
    assert_close(energy, reference[K.ENERGY][0], "energy")
    assert_close(atomic, reference[K.ATOMIC_ENERGIES], "atomic energies")
    assert_close(forces, reference[K.FORCES], "forces")
    assert_close(virial, virial_reference, "virial = -V stress")


def ghost_images(crystal, radius):
    """The crystal as a domain-decomposed host sees it: its N atoms first, then every periodic
    image within ``radius`` of one of them. Returns positions (M, 3), atomic numbers (M,) and
    the owner (index in 0..N-1) of every atom."""
    cell, positions = crystal.cell.array, crystal.get_positions()
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reach = np.ceil(radius / heights).astype(int) + 1
    shifts = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, 3)
    shifts = shifts[np.argsort(np.abs(shifts).sum(1), kind="stable")]  # the zero shift first
    images = (positions[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    owners = np.tile(np.arange(len(crystal)), len(shifts))
    distance = np.linalg.norm(images[:, None] - positions[None], axis=-1).min(axis=1)
    keep = distance < radius
    keep[:len(crystal)] = True
    return images[keep], crystal.numbers[owners[keep]], owners[keep]


@PAIRED
@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_periodic_copper_with_ghost_images(exported, name, paired):
    """Ghosts out to message_hops x cutoff, an open-boundary edge list among all atoms (edges
    among ghosts included): the local energy, folded forces and virial are the periodic ones."""
    model, module = exported(name)
    crystal = periodic_copper(repeat=1, shear=0.1)
    graph, reference, virial_reference = crystal_reference(model, crystal)
    hops = int(module.message_hops)
    assert hops == message_hops(model)
    positions, numbers, owners = ghost_images(crystal, hops * model.cutoff)
    edge_index, edge_shift = neighbour_list(positions, np.zeros((3, 3)), [False] * 3, model.cutoff)
    n = len(crystal)
    assert len(positions) > 4 * n  # ghosts outnumber the atoms of the cell
    energy, atomic, forces, virial = run(
        module, (torch.tensor(positions), model.species(torch.tensor(numbers)), torch.from_numpy(edge_index),
                 torch.tensor(edge_shift)), n, paired)
    folded = torch.zeros(n, 3, dtype=forces.dtype).index_add(0, torch.from_numpy(owners), forces)
    assert_close(energy, reference[K.ENERGY][0], "energy")
    assert_close(atomic[:n], reference[K.ATOMIC_ENERGIES], "local atomic energies")
    assert_close(folded, reference[K.FORCES], "forces folded onto their owners")
    assert_close(virial, virial_reference, "virial")


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_staged_stages_skip_edges_and_keep_the_local_results(exported, name):
    """The ghost-image crystal with its pairs ordered by the hop of their nearer atom, each stage
    given only the pairs it needs (stage_pairs): fewer edges per stage, and the same local
    energy, local atomic energies, folded forces and virial as the periodic model."""
    model, module = exported(name)
    crystal = periodic_copper(repeat=1, shear=0.1)
    graph, reference, virial_reference = crystal_reference(model, crystal)
    positions, numbers, owners = ghost_images(crystal, message_hops(model) * model.cutoff)
    edge_index, edge_shift = neighbour_list(positions, np.zeros((3, 3)), [False] * 3, model.cutoff)
    n = len(crystal)
    inputs_ = in_reverse_pairs(torch.tensor(positions), model.species(torch.tensor(numbers)),
                               torch.from_numpy(edge_index), torch.tensor(edge_shift))
    assert list(module.stage_reach) == stage_reach(model)
    order, counts = staged_pairs(inputs_[2], n, list(module.stage_reach))
    pairs = inputs_[2].shape[1] // 2
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0] <= pairs, counts  # later stages do less
    with optimisation_disabled():
        energy, atomic, forces, virial = [t.detach() for t in module(
            inputs_[0], inputs_[1], inputs_[2][:, order], inputs_[3][order], n, True, counts)]
    folded = torch.zeros(n, 3, dtype=forces.dtype).index_add(0, torch.from_numpy(owners), forces)
    assert bool(torch.isfinite(forces).all())
    assert_close(energy, reference[K.ENERGY][0], "energy")
    assert_close(atomic[:n], reference[K.ATOMIC_ENERGIES], "local atomic energies")
    assert_close(folded, reference[K.FORCES], "forces folded onto their owners")
    assert_close(virial, virial_reference, "virial")


def test_stage_pairs_are_checked(exported):
    model, module = exported("tensornet")
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff)
    positions, species, edge_index, edge_shift = in_reverse_pairs(*inputs(model, graph))
    with pytest.raises(Exception, match="stage_pairs needs paired=True"):
        module(positions, species, edge_index, edge_shift, 3, False, [1, 1, 1])
    with pytest.raises(Exception, match="one pair count per stage"):
        module(positions, species, edge_index, edge_shift, 3, True, [1, 1])
    with pytest.raises(Exception, match="must lie in 0..E/2"):
        module(positions, species, edge_index, edge_shift, 3, True, [edge_index.shape[1], 1, 1])


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_message_hops_is_the_receptive_field(name):
    """On a zigzag chain with only nearest neighbours inside the cutoff, the energy of atom k
    depends on atom 0 exactly when k <= message_hops: ghosts out to hops x cutoff suffice, and no
    more are asked for. (A family whose embedding reads no neighbour declares message_hops = 0.)"""
    model = make_model(name)
    hops = message_hops(model)
    spacing = 0.6 * model.cutoff
    count = hops + 3
    chain = Atoms([1, 6] * (count // 2) + [1] * (count % 2),
                  positions=[(k * spacing, 0.3 * (k % 2), 0.0) for k in range(count)])
    graph = molsym.from_ase(chain, model.cutoff)
    positions = graph[K.POSITIONS].clone().requires_grad_(True)
    atomic = model({**graph, K.POSITIONS: positions})[K.ATOMIC_ENERGIES]
    reach = []
    for k in range(count):
        (gradient,) = torch.autograd.grad(atomic[k], positions, retain_graph=True, allow_unused=True)
        reach.append(gradient is not None and float(gradient[0].abs().max()) > 0.0)
    assert not any(reach[hops + 1:]), f"atomic energies depend on atoms more than {hops} hops away"
    assert reach[hops], f"message_hops = {hops} overstates the receptive field (declare the embedding's message_hops)"


def test_traced_aggregation_keeps_every_edge_chunk(tmp_path, monkeypatch):
    """TensorNet aggregates edges in chunks; a trace must not freeze the example's chunk count
    (which silently dropped every later chunk's edges): export with chunks of 4 edges, evaluate a
    structure with many more edges than the traced example."""
    monkeypatch.setattr(tensornet, "_CHUNK_VALUES", 4 * MODEL_CONFIGS["tensornet"]["channels"])
    model = make_model("tensornet")
    export(model, tmp_path / "chunked.pt")
    module = torch.jit.load(str(tmp_path / "chunked.pt"))
    graph = molsym.from_ase(periodic_copper(), model.cutoff)
    assert graph[K.EDGE_INDEX].shape[1] > 1000
    reference = energy_forces_stress(model, graph)
    for paired in (False, True):
        energy, atomic, forces, _ = run(module, inputs(model, graph), graph[K.POSITIONS].shape[0], paired)
        assert_close(atomic, reference[K.ATOMIC_ENERGIES], "atomic energies")
        assert_close(forces, reference[K.FORCES], "forces")


def test_metadata_and_float32(tmp_path):
    model = make_model("tensornet")
    metadata = export(model, tmp_path / "model32.pt", dtype="float32")
    loaded = load_exported(tmp_path / "model32.pt")
    assert loaded.metadata == json.loads(json.dumps(metadata))
    module = loaded.module
    assert list(module.elements) == model.elements == metadata["elements"]
    assert list(module.element_symbols) == ["H", "C", "N", "O", "Cu"]
    assert module.cutoff == model.cutoff and module.message_hops == 3 and module.dtype_name == "float32"
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(tmp_path / "model32.pt"), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["dtype"] == "float32"
    graph = molsym.from_ase(periodic_copper(), model.cutoff)
    g32 = {k: v.float() if v.is_floating_point() else v for k, v in graph.items()}
    _, _, forces, _ = loaded(*inputs(model, g32), graph[K.POSITIONS].shape[0])
    assert forces.dtype == torch.float32
    reference = energy_forces_stress(model, graph)[K.FORCES]
    scale = float(reference.abs().max())
    assert float((forces.double() - reference).abs().max()) < 1e-4 * max(1.0, scale)


def test_no_edges_and_bad_inputs(exported):
    model, module = exported("tensornet")
    positions = torch.tensor([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0]], dtype=torch.float64)
    species = torch.tensor([0, 4])
    empty = (torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64))
    energy, atomic, forces, virial = run(module, (positions, species, *empty), 2)
    graph = molsym.from_ase(Atoms([1, 29], positions=positions.numpy()), model.cutoff)
    assert_close(atomic, model(graph)[K.ATOMIC_ENERGIES].detach(), "isolated atoms")
    assert float(forces.abs().max()) == 0.0 and float(virial.abs().max()) == 0.0
    with pytest.raises(Exception, match="species indices"):
        run(module, (positions, torch.tensor([0, 5]), *empty), 2)
    with pytest.raises(Exception, match="nlocal"):
        run(module, (positions, species, *empty), 3)
    with optimisation_disabled():  # no edge in any stage
        staged = module(positions, species, *empty, 2, True, [0, 0, 0])
    assert_close(staged[1], atomic, "isolated atoms, staged")
    unpaired = (torch.tensor([[0, 1, 1], [1, 0, 0]]), torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(Exception, match="consecutive reverse pairs"):
        with optimisation_disabled():
            module(positions, species, *unpaired, 2, True)


def test_cli_export(tmp_path, capsys):
    model = make_model("tensornet")
    molsym.save(model, tmp_path / "model.pt")
    assert cli_main(["export", str(tmp_path / "model.pt"), str(tmp_path / "out.pt"), "--dtype", "float32"]) == 0
    assert "message_hops 3" in capsys.readouterr().out
    assert load_exported(tmp_path / "out.pt").metadata["dtype"] == "float32"
    assert cli_main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "out2.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out2.pt").exists()
