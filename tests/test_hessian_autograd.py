"""The exact Hessian (vmapped vector-Hessian products, in row chunks) on every registered family.

Reference: the plain second autograd pass, one row at a time. Both evaluate the same
derivatives in a different order, so they agree to rounding (1e-12 eV/Å² on entries of order
0.01-10 eV/Å²); every chunk size gives the same matrix.
"""
from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.build import molecule

import molsym
from molsym.data import keys as K
from molsym.models.derivatives import hessian
from conftest import make_model


def row_by_row_hessian(model, graph) -> torch.Tensor:
    positions = graph[K.POSITIONS].detach().requires_grad_(True)
    energy = model({**graph, K.POSITIONS: positions})[K.ENERGY].sum()
    (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
    gradient = gradient.reshape(-1)
    rows = [torch.autograd.grad(g, positions, retain_graph=True)[0].reshape(-1) for g in gradient]
    return torch.stack(rows).detach()


def test_vmap_hessian_equals_row_by_row(family_name):
    model = make_model(family_name)
    graph = molsym.from_ase(molecule("CH3CH2OH"), model.cutoff, torch.float64)
    reference = row_by_row_hessian(model, graph)
    assert float(reference.abs().max()) > 1e-3
    torch.testing.assert_close(hessian(model, graph), reference, rtol=0, atol=1e-12)


def test_chunk_sizes_agree_and_batches_are_block_diagonal():
    model = make_model("tensornet+e3nn")
    structures = [molecule("H2O"), molecule("CH3CH2OH")]
    graph = molsym.collate([molsym.from_ase(a, model.cutoff, torch.float64) for a in structures])
    reference = hessian(model, graph, chunk_size=8)
    for chunk in (1, 5, 100):
        torch.testing.assert_close(hessian(model, graph, chunk_size=chunk), reference, rtol=0, atol=1e-12)
    assert int(torch.count_nonzero(reference[:9, 9:])) == 0
    alone = hessian(model, molsym.from_ase(structures[1], model.cutoff, torch.float64))
    torch.testing.assert_close(reference[9:, 9:], alone, rtol=0, atol=1e-12)


def test_isolated_atom_has_a_zero_hessian():
    model = make_model("e3nn")
    h = hessian(model, molsym.from_ase(Atoms("O", positions=[[0.0, 0.0, 0.0]]), model.cutoff, torch.float64))
    assert h.shape == (3, 3) and int(torch.count_nonzero(h)) == 0


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_bad_chunk_size(chunk):
    model = make_model("tensornet")
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        hessian(model, molsym.from_ase(molecule("H2O"), model.cutoff, torch.float64), chunk_size=chunk)


def test_heap_allocations_block_is_reentrant_and_restores():
    """The Hessian's allocator block (glibc: heap only, no trimming) can be entered repeatedly and
    nested, and large allocations work inside and after it."""
    from molsym.models.allocator import heap_allocations

    for _ in range(2):
        with heap_allocations() as changed:
            assert isinstance(changed, bool)
            with heap_allocations():
                big = torch.ones(1 << 24, dtype=torch.float64)  # 128 MiB
                assert float(big.sum()) == float(1 << 24)
            del big
    assert float(torch.ones(1 << 24).sum()) == float(1 << 24)
