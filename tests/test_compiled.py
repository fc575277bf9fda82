"""The compiled inference path and its pieces: radial derivatives, thread policy, agreement with eager."""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest
import torch

from conftest import bpa_frames, make_model, periodic_copper
from molsym.data import keys as K
from molsym.data.graph import collate, from_ase
from molsym.models import compiled, threads
from molsym.models.allocator import keep_freed_memory
from molsym.models.derivatives import energy_forces_stress
from molsym.nn.radial import BesselBasis, PolynomialCutoff


@pytest.mark.parametrize("module", [BesselBasis(4.5, 8), PolynomialCutoff(4.5)], ids=["bessel", "cutoff"])
def test_radial_derivatives_equal_forward_mode(module):
    r = torch.linspace(0.3, 5.0, 97, dtype=torch.float64)  # beyond the cutoff too
    module = module.double()
    _, expected = torch.func.jvp(module, (r,), (torch.ones_like(r),))
    torch.testing.assert_close(module.derivative(r), expected.detach(), rtol=1e-12, atol=1e-12)


def test_tangent_pass_equals_forward_mode():
    model = make_model("tensornet")
    lengths = torch.linspace(0.8, 4.4, 23, dtype=torch.float64)
    builder = model.geometry
    basis, envelope = builder.radial(lengths)
    derivatives = builder.radial_derivative(lengths)
    networks = [network for network, _ in model.radial_networks()]
    for network in networks + [_NotSequential(networks[0])]:  # explicit propagation and the jvp fallback
        tangent_pass = compiled._TangentPass(network, basis, envelope, basis.shape[1])

        def weights(r, network=network):
            basis, envelope = builder.radial(r)
            return network(basis) * envelope.unsqueeze(-1)

        values, derivative = torch.func.jvp(weights, (lengths,), (torch.ones_like(lengths),))
        with torch.no_grad():
            torch.testing.assert_close(tangent_pass.values(), values.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(tangent_pass.derivative(*derivatives), derivative.detach(), rtol=1e-12, atol=1e-12)


class _NotSequential(torch.nn.Module):
    """A radial network that is not an ``nn.Sequential`` of Linear and SiLU layers."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_small_graphs_run_on_one_thread_and_the_count_is_restored():
    small = from_ase(bpa_frames(1)[0], 4.5)
    large = {K.EDGE_INDEX: torch.zeros(2, threads.SINGLE_THREAD_EDGES, dtype=torch.long)}
    assert threads.threads_for(small) == 1
    assert threads.threads_for(large) == torch.get_num_threads()
    before = torch.get_num_threads()
    with threads.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    # the entry points apply the policy; the model itself sees one thread for a small molecule
    model = make_model("tensornet")
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    model.predict(bpa_frames(1)[0])
    assert seen == [1] and torch.get_num_threads() == before
    energy_forces_stress(model, small)  # a derivative function leaves the thread count alone
    assert seen[-1] == before


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (glibc >= 2.33): sizes in bytes."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def test_keep_freed_memory_serves_16_mib_blocks_from_the_heap_and_keeps_them():
    """With the thresholds set, a 16 MiB block comes from the heap, not a fresh mmap (glibc's
    default threshold is 128 KiB), and freeing it leaves the memory mapped for reuse."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not keep_freed_memory() or not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.mallinfo2.restype = _MallInfo2
    size = 16 << 20
    before = libc.mallinfo2()
    block = libc.malloc(size)
    assert block
    ctypes.memset(block, 1, size)
    during = libc.mallinfo2()
    libc.free(block)
    after = libc.mallinfo2()
    assert during.hblkhd - before.hblkhd < size, "the block was mmapped: the mmap threshold is not set"
    assert after.fordblks >= size, "the freed block was returned to the kernel: the trim threshold is not set"


def _assert_matches_eager(runner, model, graph, stress=False):
    out = runner(graph, stress=stress)
    ref = energy_forces_stress(model, graph, stress=stress)
    keys = [K.ENERGY, K.ATOMIC_ENERGIES, K.FORCES] + ([K.STRESS] if stress else [])
    for key in keys:
        assert not out[key].requires_grad
        torch.testing.assert_close(out[key], ref[key].detach(), rtol=1e-10, atol=1e-10, msg=key)


def test_compiled_matches_eager_for_molecules_without_recompiling():
    """float64 3BPA: compiled energies and forces equal eager ones; other edge counts reuse the
    graph (dynamic shapes)."""
    model = make_model("tensornet")
    runner = compiled.CompiledPotential(model)
    frames = bpa_frames(3)
    rng = np.random.default_rng(0)
    frames[1].positions += rng.normal(0.0, 0.2, frames[1].positions.shape)
    graphs = [from_ase(a, model.cutoff) for a in frames]
    assert len({g[K.EDGE_INDEX].shape[1] for g in graphs}) > 1
    _assert_matches_eager(runner, model, graphs[0])
    torch._dynamo.utils.counters.clear()
    for graph in graphs[1:]:
        _assert_matches_eager(runner, model, graph)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0, "a new edge count recompiled the graph"


@pytest.mark.slow
def test_compiled_matches_eager_for_a_batch():
    """A batch of structures (more than one cell: torch specialises size 1) compiles once more."""
    model = make_model("tensornet")
    graphs = [from_ase(a, model.cutoff) for a in bpa_frames(3)]
    _assert_matches_eager(compiled.CompiledPotential(model), model, collate(graphs))


def test_compiled_refuses_a_graph_of_another_dtype():
    model = make_model("tensornet")
    runner = compiled.CompiledPotential(model)
    graph = from_ase(bpa_frames(1)[0], model.cutoff, dtype=torch.float32)
    with pytest.raises(ValueError, match="float32"):
        runner(graph)


def test_compiled_handles_a_structure_without_pairs():
    model = make_model("tensornet")
    from ase import Atoms

    graph = from_ase(Atoms("HO", positions=[[0, 0, 0], [9, 0, 0]]), model.cutoff)
    _assert_matches_eager(compiled.CompiledPotential(model), model, graph)


@pytest.mark.slow
def test_compiled_matches_eager_for_an_edge_list_without_reverses():
    """Half an edge list: the pair rows are the directed edges themselves (no pairing)."""
    model = make_model("tensornet")
    graph = from_ase(bpa_frames(1)[0], model.cutoff)
    keep = graph[K.EDGE_INDEX][0] < graph[K.EDGE_INDEX][1]
    graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT] = graph[K.EDGE_INDEX][:, keep], graph[K.EDGE_SHIFT][keep]
    _assert_matches_eager(compiled.CompiledPotential(model), model, graph)


@pytest.mark.slow
def test_compiled_stress_matches_eager_for_a_periodic_cell():
    model = make_model("tensornet")
    graph = from_ase(periodic_copper(), model.cutoff)
    _assert_matches_eager(compiled.CompiledPotential(model), model, graph, stress=True)


@pytest.mark.slow
def test_calculator_with_compile_runs_the_same_md():
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from molsym.calculators import MolSymCalculator

    model = make_model("tensornet")
    trajectories = []
    for compile_graph in (False, True):
        atoms = bpa_frames(1)[0]
        atoms.calc = MolSymCalculator(model, compile=compile_graph)
        atoms.set_velocities(np.zeros_like(atoms.positions))
        VelocityVerlet(atoms, 0.5 * units.fs).run(20)
        trajectories.append(atoms.positions.copy())
    np.testing.assert_allclose(trajectories[1], trajectories[0], atol=1e-9)
