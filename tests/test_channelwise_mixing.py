"""The channel-wise SO(2) mixing (molsym.nn.interactions.channelwise_mixing): the fused CPU kernels
equal the batched-matmul path to rounding in values and in derivatives of every order, for any
weight strides, channel counts, halves and edge copies; bad input is refused. And the eSCN radial
network's folded envelope equals multiplying its output."""
from __future__ import annotations

import pytest
import torch

from molsym import native
from molsym.nn.interactions import channelwise_mixing
from molsym.nn.interactions.channelwise_mixing import channel_mix, channel_outer
from molsym.testing import across_threads

pytestmark = pytest.mark.skipif(not channelwise_mixing.available(),
                                reason=f"mixing kernel not built: {native.status(channelwise_mixing.SOURCE)}")


def reference_mix(weights, x, transpose=False):
    r, c = weights.shape[0], weights.shape[-1]
    copies, h = x.shape[0] // r, x.shape[1]
    pattern = "roic,qrhoc->qrhic" if transpose else "roic,qrhic->qrhoc"
    return torch.einsum(pattern, weights, x.reshape(copies, r, h, -1, c)).reshape(x.shape[0], h, -1, c)


def reference_outer(a, b, rows):
    copies, h, c = a.shape[0] // rows, a.shape[1], a.shape[-1]
    return torch.einsum("qrhoc,qrhic->roic", a.reshape(copies, rows, h, -1, c), b.reshape(copies, rows, h, -1, c))


def problem(rows=11, outs=5, ins=3, halves=2, copies=2, channels=5, dtype=torch.float64, seed=0):
    """Weights (R, O, I, C) as a strided view with contiguous channels (the kernel reads it in place)."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(rows, outs + 1, ins, channels, generator=gen, dtype=dtype)[:, 1:]
    x = torch.randn(copies * rows, halves, ins, channels, generator=gen, dtype=dtype)
    y = torch.randn(copies * rows, halves, outs, channels, generator=gen, dtype=dtype)
    return weights, x, y


@pytest.mark.parametrize("channels", [1, 5, 8, 16, 19])
@pytest.mark.parametrize("halves,copies", [(1, 1), (2, 2), (2, 1)])
def test_kernels_equal_the_reference(channels, halves, copies):
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        weights, x, y = problem(halves=halves, copies=copies, channels=channels, dtype=dtype)
        rows = weights.shape[0]
        torch.testing.assert_close(channel_mix(weights, x), reference_mix(weights, x), rtol=tol, atol=tol)
        torch.testing.assert_close(channel_mix(weights, y, transpose=True), reference_mix(weights, y, True),
                                   rtol=tol, atol=tol)
        torch.testing.assert_close(channel_outer(y, x, rows), reference_outer(y, x, rows), rtol=tol, atol=tol)
        strided = torch.randn(rows, channels, 5, 3, dtype=dtype).permute(0, 2, 3, 1)  # channels not innermost
        torch.testing.assert_close(channel_mix(strided, x), reference_mix(strided, x), rtol=tol, atol=tol)


def test_first_and_second_derivatives_equal_the_reference():
    weights, x, y = problem()
    rows = weights.shape[0]
    directions = [torch.randn(t.shape, generator=torch.Generator().manual_seed(k), dtype=t.dtype)
                  for k, t in enumerate((weights, x, y))]
    results = []
    for mix, outer in ((channel_mix, channel_outer), (reference_mix, reference_outer)):
        w, a, b = (t.detach().clone().requires_grad_(True) for t in (weights, x, y))
        loss = (mix(w, a).sin().sum() + mix(w, b, True).cos().sum() + outer(b, a, rows).square().sum()
                + mix(w, mix(w, a), True).square().sum())
        grads = torch.autograd.grad(loss, (w, a, b), create_graph=True)
        second = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, directions)), (w, a, b))
        results.append([g.detach() for g in grads] + list(second))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13 * float(reference.abs().max()))


def test_gradcheck_and_gradgradcheck():
    weights, x, y = problem(rows=3, outs=3, ins=2, channels=3)
    inputs = tuple(t.detach().clone().contiguous().requires_grad_(True) for t in (weights, x, y))
    function = lambda w, a, b: (channel_mix(w, a), channel_mix(w, b, True), channel_outer(b, a, 3))  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_one_and_two_threads_give_the_same_bits():
    weights, x, y = problem(rows=2000, channels=21, dtype=torch.float32)
    results = across_threads(lambda: (channel_mix(weights, x), channel_mix(weights, y, True),
                                      channel_outer(y, x, 2000)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_batched_gradients_take_the_reference_path_and_no_edges_are_fine(monkeypatch):
    weights, x, _ = problem()
    a = x.detach().clone().requires_grad_(True)
    out = channel_mix(weights, a)
    basis = torch.randn(4, *out.shape, dtype=out.dtype)
    (batched,) = torch.autograd.grad(out, a, basis, is_grads_batched=True)
    expected = torch.stack([reference_mix(weights, v, True) for v in basis])
    torch.testing.assert_close(batched, expected, rtol=1e-12, atol=1e-12)
    for kernel in (True, False):  # no edges, on the kernel and on the PyTorch path
        monkeypatch.setattr(channelwise_mixing, "_kernel", lambda *tensors, kernel=kernel: kernel)
        empty = channel_mix(weights[:0], x[:0])
        assert empty.shape == (0, 2, 5, 5) and channel_outer(empty, x[:0], 0).shape == (0, 5, 3, 5)


def test_bad_input_is_refused():
    weights, x, y = problem()
    with pytest.raises(ValueError, match="do not fit"):
        channel_mix(weights, y)
    with pytest.raises(ValueError, match="not a multiple"):
        channel_mix(weights, x[:-1])
    with pytest.raises(ValueError, match="do not fit"):
        channel_outer(y, x[:, :1], weights.shape[0])


def test_the_folded_envelope_equals_scaling_the_output():
    from molsym.nn.forms import FeatureForm
    from molsym.nn.interactions.escn import ESCNConvolution, ESCNSettings

    torch.manual_seed(0)
    layer = ESCNConvolution(ESCNSettings(channels=4, lmax=2, mmax=1, num_radial=6, radial_hidden=8),
                            FeatureForm.spherical(4, 2, 1)).double()
    basis, scale = torch.randn(17, 6, dtype=torch.float64), torch.rand(17, dtype=torch.float64)
    torch.testing.assert_close(layer.radial_network.scaled(basis, scale),
                               layer.radial_network(basis) * scale.unsqueeze(-1), rtol=1e-13, atol=1e-13)
