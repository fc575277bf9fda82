"""Both scatter backends give identical sums and derivatives."""
from __future__ import annotations

import pytest
import torch

import molsym
from molsym.models.derivatives import energy_forces_stress
from molsym.nn import scatter
from conftest import bpa_frames


def test_native_scatter_sum_and_double_backward():
    src = torch.randn(50, 4, 3, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 7, (50,))
    out = scatter.scatter_sum(src, index, 7)
    expected = torch.zeros(7, 4, 3, dtype=torch.float64)
    for e in range(50):
        expected[index[e]] += src[e].detach()
    assert torch.allclose(out, expected)
    assert torch.autograd.gradgradcheck(lambda s: scatter.scatter_sum(s, index, 7), (src,))


def test_enabling_missing_torch_scatter_is_a_clear_error():
    if scatter.torch_scatter_available():
        pytest.skip("torch_scatter is installed")
    with pytest.raises(RuntimeError, match="torch_scatter is not installed"):
        scatter.use_torch_scatter(True)
    assert scatter.scatter_backend() == "native"


@pytest.mark.skipif(not scatter.torch_scatter_available(), reason="optional extra molsym[scatter] not installed")
def test_torch_scatter_backend_matches_native():
    torch.manual_seed(0)
    model = molsym.Potential.from_config({"elements": [1, 6, 7, 8], "channels": 16}).double()
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff)
    native = energy_forces_stress(model, graph)
    scatter.use_torch_scatter(True)
    try:
        assert scatter.scatter_backend() == "torch_scatter"
        other = energy_forces_stress(model, graph)
    finally:
        scatter.use_torch_scatter(False)
    assert torch.allclose(native["energy"], other["energy"], atol=1e-12)
    assert torch.allclose(native["forces"], other["forces"], atol=1e-12)
