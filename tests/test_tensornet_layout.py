"""TensorNet's coefficient-space internals against the plain Cartesian definitions."""
from __future__ import annotations

import torch

from molsym.nn.interactions import tensornet as tn
from molsym.nn.interactions.tensornet import TensorNetSettings
from molsym.o3.cartesian import decompose, from_irreps, to_irreps


def to_coefficients(x: torch.Tensor) -> torch.Tensor:
    """Cartesian tensors (N, C, 3, 3) -> TensorNet's coefficients (9, N, C)."""
    return to_irreps(x).permute(2, 0, 1).contiguous()


def to_cartesian(c: torch.Tensor) -> torch.Tensor:
    """Coefficients (9, N, C) -> Cartesian tensors (N, C, 3, 3)."""
    return from_irreps(c.permute(1, 2, 0))


def _random_cartesian(n=5, c=4):
    torch.manual_seed(0)
    return torch.randn(n, c, 3, 3, dtype=torch.float64)


def test_coefficients_round_trip_and_norms():
    x = _random_cartesian()
    coeff = to_coefficients(x)
    assert coeff.shape == (9, 5, 4)
    torch.testing.assert_close(to_cartesian(coeff), x)
    i_part, a_part, s_part = decompose(x)
    expected = torch.stack([(p * p).sum((-1, -2)) for p in (i_part, a_part, s_part)])
    torch.testing.assert_close(tn.squared_norms(coeff), expected)


def test_products_match_matmul():
    x, y = _random_cartesian(), _random_cartesian(5, 4).flip(0)
    cx, cy = to_coefficients(x), to_coefficients(y)
    torch.testing.assert_close(to_cartesian(tn.anticommutator(cx, cy)), x @ y + y @ x)
    torch.testing.assert_close(to_cartesian(tn.square(cx)), x @ x)
    # the unrolled structure constants that compiled graphs use
    torch.testing.assert_close(to_cartesian(tn.unrolled_anticommutator(cx, cy)), x @ y + y @ x,
                               rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(to_cartesian(tn.unrolled_square(cx, cx)), x @ x, rtol=1e-13, atol=1e-13)


def test_normalise_divides_by_squared_frobenius_norm_plus_one():
    x = _random_cartesian()
    expected = x / ((x * x).sum((-1, -2)) + 1.0)[..., None, None]
    torch.testing.assert_close(to_cartesian(tn.normalise(to_coefficients(x))), expected)


def test_partwise_linear_mixes_each_part():
    x = _random_cartesian()
    lin = tn.PartwiseLinear(4).double()
    assert lin.weight.shape == (3, 4, 4)
    out = to_cartesian(lin(to_coefficients(x)))
    expected = sum(torch.einsum("ncab,cd->ndab", p, lin.weight[k]) for k, p in enumerate(decompose(x)))
    torch.testing.assert_close(out, expected)


def test_pair_table_matches_pair_mix():
    emb = tn.TensorNetEmbedding(TensorNetSettings(channels=4, num_radial=5), num_elements=3).double()
    z = emb.element_embedding.weight
    table = emb.pair_table()
    for a in range(3):
        for b in range(3):
            torch.testing.assert_close(table[a, b], emb.pair_mix(torch.cat((z[a], z[b]))))


def test_interaction_independent_of_edge_chunks(monkeypatch):
    from molsym.data.graph import from_ase
    from molsym.models.potential import Potential
    from ase.build import molecule

    torch.manual_seed(1)
    model = Potential.from_config({"family": "tensornet", "elements": [1, 6, 8], "channels": 4}).double()
    graph = from_ase(molecule("CH3CH2OH"), model.cutoff)
    full = model(graph)["energies"]
    monkeypatch.setattr(tn, "_CHUNK_VALUES", 4 * 5)  # chunks of 5 edges
    torch.testing.assert_close(model(graph)["energies"], full, rtol=1e-13, atol=1e-13)
