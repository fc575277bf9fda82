"""Node features rotated into edge frames and back (molsym.o3.edge_rotation): the fused CPU kernels
equal the bmm / index_select / index_add path to rounding, in values and in derivatives of every
order, for any number of threads; inputs the kernel cannot read fall back to that path; bad input
is refused."""
from __future__ import annotations

import pytest
import torch

from molsym import native
from molsym.nn.scatter import scatter_sum
from molsym.o3 import edge_rotation
from molsym.o3.edge_rotation import edge_outer, rotate_into, rotate_out_of
from molsym.testing import across_threads

pytestmark = pytest.mark.skipif(not edge_rotation.available(),
                                reason=f"edge-rotation kernel not built: {native.status(edge_rotation.SOURCE)}")


def reference_into(rotation, x, index):
    return torch.bmm(rotation, x.index_select(0, index))


def reference_outer(a, b, index):
    return torch.bmm(a, b.index_select(0, index).transpose(1, 2))


def reference_out_of(rotation, frames, index, num_nodes):
    return scatter_sum(torch.bmm(rotation.transpose(1, 2), frames), index, num_nodes)


def problem(edges=60, nodes=9, rows=7, cols=9, channels=5, dtype=torch.float64, seed=0):
    """Rotations (D, K, P), node features as a strided view (N, P, C), frames (D, K, C) and an index
    that leaves the last node without edges."""
    gen = torch.Generator().manual_seed(seed)
    rotation = torch.randn(edges, rows, cols, generator=gen, dtype=dtype)
    nodes_full = torch.randn(nodes, 2, cols + 3, channels, generator=gen, dtype=dtype)
    x = nodes_full[:, 1, 2:2 + cols]
    frames = torch.randn(edges, rows, channels, generator=gen, dtype=dtype)
    index = torch.randint(0, nodes - 1, (edges,), generator=gen)
    return rotation, x, frames, index


@pytest.mark.parametrize("channels", [1, 5, 8, 16, 19, 37])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernels_equal_the_reference(channels, dtype):
    rotation, x, frames, index = problem(channels=channels, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    into = rotate_into(rotation, x, index)
    torch.testing.assert_close(into, reference_into(rotation, x, index), rtol=tol, atol=tol)
    out = rotate_out_of(rotation, frames, index, x.shape[0])
    torch.testing.assert_close(out, reference_out_of(rotation, frames, index, x.shape[0]), rtol=tol, atol=tol)
    assert torch.all(out[-1] == 0)  # a node without edges
    strided = torch.stack((index, index), dim=1)[:, 1]  # an index that is a strided view
    torch.testing.assert_close(rotate_into(rotation, x, strided), into, rtol=0, atol=0)
    torch.testing.assert_close(rotate_out_of(rotation, frames, strided, x.shape[0]), out, rtol=0, atol=0)
    torch.testing.assert_close(edge_outer(frames, x, index), reference_outer(frames, x, index), rtol=tol, atol=tol)


@pytest.mark.parametrize("cols", [1, 3, 7, 8, 15, 16, 25, 49])
def test_outer_products_of_every_width(cols):
    """The rotations' gradient runs its vectors along the node rows: every width of tail."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        rotation, x, frames, index = problem(cols=cols, channels=11, dtype=dtype)
        torch.testing.assert_close(edge_outer(frames, x, index), reference_outer(frames, x, index), rtol=tol,
                                   atol=tol)


def test_first_and_second_derivatives_equal_the_reference():
    """Gradients of every input, then the gradient of a gradient (training on forces, Hessians)."""
    rotation, x, frames, index = problem()
    n = x.shape[0]
    directions = [torch.randn(t.shape, generator=torch.Generator().manual_seed(k), dtype=t.dtype)
                  for k, t in enumerate((rotation, x, frames))]
    results = []
    for into, out_of in ((rotate_into, rotate_out_of), (reference_into, reference_out_of)):
        r, h, f = (t.detach().clone().requires_grad_(True) for t in (rotation, x, frames))
        loss = (into(r, h, index).sin().sum() + out_of(r, f, index, n).cos().sum()
                + out_of(r, into(r, h, index), index, n).square().sum())
        grads = torch.autograd.grad(loss, (r, h, f), create_graph=True)
        second = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, directions)), (r, h, f))
        results.append([g.detach() for g in grads] + list(second))
    for ours, reference in zip(*results):  # relative to the largest entry (sums of terms of both signs)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13 * float(reference.abs().max()))


def test_gradcheck_and_gradgradcheck():
    rotation, x, frames, index = problem(edges=12, nodes=4, rows=3, cols=4, channels=3)
    n = x.shape[0]
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (rotation, x.contiguous(), frames))
    assert torch.autograd.gradcheck(lambda r, h, f: (rotate_into(r, h, index), rotate_out_of(r, f, index, n)), inputs)
    assert torch.autograd.gradgradcheck(lambda r, h, f: (rotate_into(r, h, index), rotate_out_of(r, f, index, n)),
                                        inputs)
    assert torch.autograd.gradgradcheck(lambda f, h: edge_outer(f, h, index), inputs[:0:-1])


def test_one_and_two_threads_give_the_same_bits():
    """Also past one chunk of the sum (16,384 edges), where chunks are summed separately."""
    rotation, x, frames, index = problem(edges=40_000, nodes=50, rows=5, cols=6, channels=17, dtype=torch.float32)
    results = across_threads(lambda: (rotate_into(rotation, x, index),
                                      rotate_out_of(rotation, frames, index, x.shape[0])))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    torch.testing.assert_close(results[0][1], reference_out_of(rotation, frames, index, x.shape[0]),
                               rtol=1e-4, atol=1e-4)


def test_batched_gradients_and_torch_func_take_the_reference_path():
    rotation, x, frames, index = problem()
    h = x.detach().clone().requires_grad_(True)
    y = rotate_into(rotation, h, index)
    basis = torch.eye(y.numel(), dtype=y.dtype)[:7].view(7, *y.shape)
    (batched,) = torch.autograd.grad(y, h, basis, is_grads_batched=True)
    expected = torch.stack([reference_out_of(rotation, v, index, x.shape[0]) for v in basis])
    torch.testing.assert_close(batched, expected, rtol=1e-12, atol=1e-12)
    jac = torch.func.jacrev(lambda f: rotate_out_of(rotation, f, index, x.shape[0]))(frames)
    jac_ref = torch.func.jacrev(lambda f: reference_out_of(rotation, f, index, x.shape[0]))(frames)
    torch.testing.assert_close(jac, jac_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_a_trace_records_the_reference_operations():
    rotation, x, frames, index = problem()
    traced = torch.jit.trace(lambda r, h: rotate_into(r, h, index), (rotation, x.contiguous()))
    assert "aten::bmm" in str(traced.graph)
    torch.testing.assert_close(traced(rotation, x.contiguous()), reference_into(rotation, x, index))


def test_bad_input_is_refused():
    rotation, x, frames, index = problem()
    with pytest.raises(IndexError, match="outside the nodes"):
        rotate_into(rotation, x, torch.full_like(index, x.shape[0]))
    with pytest.raises(IndexError, match="outside the nodes"):
        rotate_out_of(rotation, frames, torch.full_like(index, -1), x.shape[0])
    with pytest.raises(ValueError, match="do not fit"):
        rotate_into(rotation, x[:, :-1], index)
    with pytest.raises(ValueError, match="do not fit"):
        rotate_out_of(rotation, frames[:-1], index, x.shape[0])
    with pytest.raises(ValueError, match="expected rotations"):
        rotate_into(rotation[0], x, index)
    with pytest.raises(IndexError, match="outside the nodes"):
        edge_outer(frames, x, torch.full_like(index, x.shape[0]))
    with pytest.raises(ValueError, match="edge outer product"):
        edge_outer(frames[:, :, :-1], x, index)
    with pytest.raises(TypeError, match="int64"):
        rotate_into(rotation, x, index.int())
