"""molsym.o3.bilinear: e3nn's fully connected tensor product, evaluated without outer products."""
import pytest
import torch
from e3nn import o3

from molsym.o3.bilinear import fully_connected

CASES = [
    ("16x0e+16x1o+16x1e+16x2e", "16x0e+16x1o+16x1e+16x2e", "0e+1e+2e"),  # the Hessian head's pair blocks
    ("16x0e+16x1o+16x1e+16x2e", "16x0e+16x1o+16x1e+16x2e", "0e+2e"),
    ("4x0e+3x1o+2x2e+1x3o", "2x0e+5x1e+3x2o", "3x0e+2x1o+2x1e+4x2e+1x3o+2x4e"),  # several output channels
]


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn's Wigner-3j constants in float64
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("irreps1, irreps2, irreps_out", CASES)
def test_equals_e3nn_and_its_gradients(float64_default, irreps1, irreps2, irreps_out):
    torch.manual_seed(0)
    tp = o3.FullyConnectedTensorProduct(irreps1, irreps2, irreps_out)
    x1 = torch.randn(7, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(7, tp.irreps_in2.dim, requires_grad=True)
    expected, ours = tp(x1, x2), fully_connected(tp, x1, x2)
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, rtol=0, atol=1e-12)
    probe = torch.randn_like(expected)
    g_expected = torch.autograd.grad((expected * probe).sum(), (x1, x2, tp.weight))
    g_ours = torch.autograd.grad((ours * probe).sum(), (x1, x2, tp.weight))
    for a, b in zip(g_ours, g_expected):
        assert torch.allclose(a, b, rtol=0, atol=1e-11)


def test_output_without_paths_is_zero(float64_default):
    tp = o3.FullyConnectedTensorProduct("2x0e", "2x0e", "1x0e+1x1o")  # no path reaches 1o
    x = torch.randn(3, 2)
    out = fully_connected(tp, x, x)
    assert torch.allclose(out, tp(x, x), rtol=0, atol=1e-12) and out[:, 1:].abs().max() == 0


def test_refuses_other_products():
    tp = o3.TensorProduct("2x1o", "1x1o", "2x1e", [(0, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="'uvw'"):
        fully_connected(tp, torch.randn(3, 6), torch.randn(3, 3))
    external = o3.FullyConnectedTensorProduct("2x0e", "2x0e", "0e", shared_weights=False)
    with pytest.raises(ValueError, match="internal, shared weights"):
        fully_connected(external, torch.randn(3, 2), torch.randn(3, 2))
    tp = o3.FullyConnectedTensorProduct("2x0e", "2x0e", "0e")
    with pytest.raises(ValueError, match="same Z"):
        fully_connected(tp, torch.randn(3, 2), torch.randn(4, 2))
