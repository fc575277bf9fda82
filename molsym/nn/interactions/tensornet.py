"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023): Cartesian rank-2 tensor features.

Node features are C channels of 3x3 tensors X = I + A + S, form ``"cartesian"``
(N, C, 3, 3). Internally each part is handled through its exact irreps
coefficients (``molsym.o3.cartesian``): I -> 1 number (0e), A -> 3 (1o), S -> 5
(2e), laid out (N, 9, C), so that neighbour aggregation moves 9 numbers per
channel instead of 27 and channel mixing of each part is one matrix product.

O(3): the antisymmetric part is built from skew(r̂), a polar vector, so it is
parity-odd, and I, S are even; the update Y M + M Y and dX + dX^2 preserve that
parity assignment, so energies are invariant under reflections as well.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from molsym.nn.geometry import EdgeGeometry
from molsym.nn.interactions.base import Family, Interaction, ModelSettings
from molsym.nn.scatter import scatter_sum
from molsym.o3.cartesian import from_irreps, to_irreps

# which of the parts (0: I, 1: A, 2: S) each of the 9 coefficients belongs to
_PART_OF = (0, 1, 1, 1, 2, 2, 2, 2, 2)
_SLICES = (slice(0, 1), slice(1, 4), slice(4, 9))


def _part_index(device) -> torch.Tensor:
    return torch.tensor(_PART_OF, dtype=torch.long, device=device)


def _cartesian_to_coefficients(x: torch.Tensor) -> torch.Tensor:
    """(N, C, 3, 3) -> (N, 9, C)."""
    return to_irreps(x).transpose(1, 2)


def _coefficients_to_cartesian(c: torch.Tensor) -> torch.Tensor:
    """(N, 9, C) -> (N, C, 3, 3)."""
    return from_irreps(c.transpose(1, 2))


def squared_norms(c: torch.Tensor) -> torch.Tensor:
    """Coefficients (N, 9, C) -> |I|^2, |A|^2, |S|^2 (Frobenius), shape (N, 3, C)."""
    sq = c * c
    return torch.stack([sq[:, s].sum(1) for s in _SLICES], dim=1)


class PartwiseLinear(nn.Module):
    """Separate channel mixing of the I, A and S parts (no bias: keeps equivariance)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, channels, channels) / math.sqrt(channels))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """(N, 9, C) -> (N, 9, C)."""
        return torch.cat([c[:, s] @ self.weight[k] for k, s in enumerate(_SLICES)], dim=1)


def _edge_basis(unit: torch.Tensor) -> torch.Tensor:
    """Coefficients of Id, skew(r̂) and r̂r̂^T - Id/3 per edge, shape (E, 9)."""
    outer = unit.unsqueeze(-1) * unit.unsqueeze(-2)
    l2 = to_irreps(outer)[:, 4:]
    ones = unit.new_full((unit.shape[0], 1), math.sqrt(3.0))
    return torch.cat((ones, math.sqrt(2.0) * unit, l2), dim=1)


class TensorNetEmbedding(nn.Module):
    """Per-edge I0 = Id, A0 = skew(r̂), S0 = r̂r̂^T - Id/3 weighted by radial functions and
    both elements' embeddings, summed over neighbours, normalised and channel-mixed."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        c = settings.channels
        self.channels = c
        self.element_embedding = nn.Embedding(settings.num_elements, c)
        self.pair_mix = nn.Linear(2 * c, c)
        self.radial_projection = nn.Linear(settings.num_radial, 3 * c)
        self.norm = nn.LayerNorm(c)
        self.scalar_mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.SiLU(), nn.Linear(2 * c, 3 * c), nn.SiLU())
        self.mix = PartwiseLinear(c)

    def forward(self, species: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """species (N,) element indices -> X (N, C, 3, 3)."""
        i, j = geometry.edge_index
        n, e, c = species.shape[0], i.shape[0], self.channels
        z = self.element_embedding(species)
        pair = self.pair_mix(torch.cat((z.index_select(0, i), z.index_select(0, j)), dim=-1))
        weights = self.radial_projection(geometry.radial).view(e, 3, c) * (geometry.envelope[:, None] * pair)[:, None]
        weights = weights.index_select(1, _part_index(weights.device))  # (E, 9, C)
        coefficients = scatter_sum(weights * _edge_basis(geometry.unit).unsqueeze(-1), i, n)  # (N, 9, C)
        scalars = self.scalar_mlp(self.norm(squared_norms(coefficients).sum(1))).view(n, 3, c)
        coefficients = self.mix(coefficients) * scalars.index_select(1, _part_index(scalars.device))
        return _coefficients_to_cartesian(coefficients)


class TensorNetInteraction(Interaction):
    """X -> X/(|X|^2+1); Y = mix(I, A, S); M_i = sum_j f(r_ij) (I_j, A_j, S_j) parts;
    P = Y M + M Y, normalised, decomposed, mixed -> dX; X' = X + dX + dX^2."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        c = settings.channels
        self.channels = c
        self.radial_mlp = nn.Sequential(
            nn.Linear(settings.num_radial, c), nn.SiLU(),
            nn.Linear(c, 2 * c), nn.SiLU(),
            nn.Linear(2 * c, 3 * c), nn.SiLU(),
        )
        self.mix_in = PartwiseLinear(c)
        self.mix_out = PartwiseLinear(c)

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """features (N, C, 3, 3) -> (N, C, 3, 3)."""
        i, j = geometry.edge_index
        n, e, c = features.shape[0], i.shape[0], self.channels
        x = features / ((features * features).sum((-1, -2)) + 1.0)[..., None, None]
        y = self.mix_in(_cartesian_to_coefficients(x))  # (N, 9, C)
        weights = (self.radial_mlp(geometry.radial) * geometry.envelope[:, None]).view(e, 3, c)
        weights = weights.index_select(1, _part_index(weights.device))  # (E, 9, C)
        message = scatter_sum(weights * y.index_select(0, j), i, n)  # (N, 9, C)
        ym, mm = _coefficients_to_cartesian(y), _coefficients_to_cartesian(message)
        p = _cartesian_to_coefficients(mm @ ym + ym @ mm)
        p = p / ((p * p).sum(1, keepdim=True) + 1.0)
        dx = _coefficients_to_cartesian(self.mix_out(p))
        return x + dx + dx @ dx


class TensorNetInvariants(nn.Module):
    """X -> LayerNorm(|I|^2, |A|^2, |S|^2) -> Linear -> SiLU, shape (N, C)."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        c = settings.channels
        self.norm = nn.LayerNorm(3 * c)
        self.linear = nn.Linear(3 * c, c)
        self.act = nn.SiLU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        norms = squared_norms(_cartesian_to_coefficients(features)).flatten(1)
        return self.act(self.linear(self.norm(norms)))


TENSORNET = Family(
    name="tensornet",
    form="cartesian",
    embedding=TensorNetEmbedding,
    interaction=TensorNetInteraction,
    invariants=TensorNetInvariants,
)
