"""TensorNet's component-major internals against the plain Cartesian definitions."""
from __future__ import annotations

import torch

from molsym.nn.interactions import tensornet as tn
from molsym.nn.interactions.base import ModelSettings
from molsym.o3.cartesian import decompose


def _random_cartesian(n=5, c=4):
    torch.manual_seed(0)
    return torch.randn(n, c, 3, 3, dtype=torch.float64)


def test_coefficients_round_trip_and_norms():
    x = _random_cartesian()
    coeff = tn._cartesian_to_coefficients(x)
    assert coeff.shape == (9, 5, 4)
    torch.testing.assert_close(tn._coefficients_to_cartesian(coeff), x)
    i_part, a_part, s_part = decompose(x)
    expected = torch.stack([(p * p).sum((-1, -2)) for p in (i_part, a_part, s_part)], dim=1)
    torch.testing.assert_close(tn.squared_norms(coeff), expected)


def test_products_match_matmul():
    x, y = _random_cartesian(), _random_cartesian(5, 4).flip(0)
    cx, cy = tn._cartesian_to_coefficients(x), tn._cartesian_to_coefficients(y)
    torch.testing.assert_close(tn._coefficients_to_cartesian(tn._anticommutator(cx, cy)), x @ y + y @ x)
    torch.testing.assert_close(tn._coefficients_to_cartesian(tn._square(cx)), x @ x)


def test_partwise_linear_mixes_each_part():
    x = _random_cartesian()
    lin = tn.PartwiseLinear(4).double()
    assert lin.weight.shape == (3, 4, 4)
    out = tn._coefficients_to_cartesian(lin(tn._cartesian_to_coefficients(x)))
    expected = sum(torch.einsum("ncab,cd->ndab", p, lin.weight[k]) for k, p in enumerate(decompose(x)))
    torch.testing.assert_close(out, expected)


def test_pair_table_matches_pair_mix():
    emb = tn.TensorNetEmbedding(ModelSettings(num_elements=3, channels=4, num_radial=5)).double()
    z = emb.element_embedding.weight
    table = emb.pair_table()
    for a in range(3):
        for b in range(3):
            torch.testing.assert_close(table[a, b], emb.pair_mix(torch.cat((z[a], z[b]))))


def test_aggregation_independent_of_chunking(monkeypatch):
    torch.manual_seed(1)
    n, e, c = 6, 37, 4
    receivers, senders = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    y = torch.randn(9, n, c, dtype=torch.float64)
    weights = torch.randn(e, 3, c, dtype=torch.float64)
    full = tn._aggregate(y.split(tn._SIZES), weights, receivers, n, senders=senders)
    monkeypatch.setattr(tn, "_CHUNK_VALUES", 3 * c)
    chunked = tn._aggregate(y.split(tn._SIZES), weights, receivers, n, senders=senders)
    torch.testing.assert_close(chunked, full)
    expected = torch.zeros(9, n, c, dtype=torch.float64)
    part = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2])
    for k in range(e):
        expected[:, receivers[k]] += y[:, senders[k]] * weights[k, part]
    torch.testing.assert_close(full, expected)
