"""Reference family built from e3nn tensor products (NequIP-style convolution).

Node features: spherical-harmonic coefficients up to lmax, form ``"sh"``
(N, (lmax+1)^2, C), degree l carrying parity (-1)^l (0e, 1o, 2e, 3o, ...).
One layer: m_i = (1/avg_num_neighbors) sum_j TP(x_j, Y(r̂_ij); w(|r_ij|)) with a
channel-wise ("uvu") tensor product whose weights come from a radial MLP
times the smooth cutoff; x' = x + Gate(Linear(m)) + SelfInteraction(x).

Only paths with l1 + l2 + l3 even keep parity (-1)^l, the paths the Gaunt and
eSCN families also produce; this family is the oracle they are checked against.
"""
from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from molsym.nn.geometry import EdgeGeometry
from molsym.nn.interactions.base import Family, Interaction, ModelSettings
from molsym.nn.scatter import scatter_sum


def sh_irreps(channels: int, lmax: int) -> o3.Irreps:
    """C x 0e + C x 1o + ... + C x lmax p, p = (-1)^l."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def to_e3nn_layout(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """(N, (L+1)^2, C) -> e3nn's flat (N, sum_l C (2l+1)), channel-major within each l."""
    n = x.shape[0]
    return torch.cat([x[:, l * l:(l + 1) ** 2].transpose(1, 2).reshape(n, -1) for l in range(lmax + 1)], dim=1)


def from_e3nn_layout(x: torch.Tensor, channels: int, lmax: int) -> torch.Tensor:
    """Inverse of :func:`to_e3nn_layout`."""
    n = x.shape[0]
    blocks, start = [], 0
    for l in range(lmax + 1):
        size = channels * (2 * l + 1)
        blocks.append(x[:, start:start + size].reshape(n, channels, 2 * l + 1).transpose(1, 2))
        start += size
    return torch.cat(blocks, dim=1)


class E3nnEmbedding(nn.Module):
    """Element embedding into the l = 0 block; higher degrees start at zero."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        self.element_embedding = nn.Embedding(settings.num_elements, settings.channels)
        self.dim = (settings.lmax + 1) ** 2

    def forward(self, species: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        scalars = self.element_embedding(species)
        rest = scalars.new_zeros(scalars.shape[0], self.dim - 1, scalars.shape[1])
        return torch.cat((scalars.unsqueeze(1), rest), dim=1)


class E3nnConvolution(Interaction):
    """Equivariant convolution with a gated nonlinearity and a residual self-interaction."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        c, lmax = settings.channels, settings.lmax
        self.channels, self.lmax = c, lmax
        self.inv_avg_neighbors = 1.0 / settings.avg_num_neighbors
        irreps_node = sh_irreps(c, lmax)
        irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.linear_in = o3.Linear(irreps_node, irreps_node)
        instructions, irreps_mid = [], []
        for i1, (mul, ir1) in enumerate(irreps_node):
            for i2, (_, ir2) in enumerate(irreps_sh):
                for ir3 in ir1 * ir2:
                    if ir3.l <= lmax and ir3.p == (-1) ** ir3.l:
                        instructions.append((i1, i2, len(irreps_mid), "uvu", True))
                        irreps_mid.append((mul, ir3))
        irreps_mid = o3.Irreps(irreps_mid)
        self.tensor_product = o3.TensorProduct(
            irreps_node, irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial_mlp = FullyConnectedNet(
            [settings.num_radial, settings.radial_hidden, self.tensor_product.weight_numel], torch.nn.functional.silu
        )
        gated = o3.Irreps([(c, (l, (-1) ** l)) for l in range(1, lmax + 1)])
        self.gate = Gate(
            o3.Irreps([(c, (0, 1))]), [torch.nn.functional.silu],
            o3.Irreps([(gated.num_irreps, (0, 1))]) if lmax > 0 else o3.Irreps(""),
            [torch.sigmoid] if lmax > 0 else [],
            gated,
        )
        self.linear_out = o3.Linear(irreps_mid.simplify(), self.gate.irreps_in)
        self.self_interaction = o3.Linear(irreps_node, irreps_node)

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """features (N, (L+1)^2, C) -> (N, (L+1)^2, C)."""
        i, j = geometry.edge_index
        x = to_e3nn_layout(features, self.lmax)
        h = self.linear_in(x)
        weights = self.radial_mlp(geometry.radial) * geometry.envelope[:, None]
        messages = self.tensor_product(h.index_select(0, j), geometry.spherical_harmonics(self.lmax), weights)
        aggregated = scatter_sum(messages, i, x.shape[0]) * self.inv_avg_neighbors
        update = self.gate(self.linear_out(aggregated)) + self.self_interaction(x)
        return features + from_e3nn_layout(update, self.channels, self.lmax)


class E3nnInvariants(nn.Module):
    """The l = 0 block, (N, C)."""

    def __init__(self, settings: ModelSettings):
        super().__init__()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 0]


E3NN = Family(
    name="e3nn",
    form="sh",
    embedding=E3nnEmbedding,
    interaction=E3nnConvolution,
    invariants=E3nnInvariants,
)
