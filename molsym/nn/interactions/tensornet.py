"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023): Cartesian rank-2 tensor features.

Node features are C channels of 3x3 tensors X = I + A + S. They are held, in
form ``"cartesian"``, by their 9 coefficients in the orthonormal I/A/S basis of
``molsym.o3.cartesian`` (I -> 1 number (0e), A -> 3 (1o), S -> 5 (2e)),
component-major: shape (9, N, C). The map is exact and orthonormal, so

* the parts are the contiguous blocks [0:1], [1:4], [4:9], and channel mixing
  of every part is one batched product (9, N, C) @ (9, C, C) with each part's
  C x C matrix repeated over its components;
* norms are sums over the leading axis (coefficient norms equal Frobenius norms);
* 3x3 matrix products are a fixed bilinear map of the coefficients: the
  anticommutator X Y + Y X is T @ (x outer y) with the (9, 81) matrix T of
  :func:`molsym.o3.cartesian.anticommutator_matrix`, and X X is half of it.

Edge work is laid out as (9, D, C) over the D directed edges of the geometry's
pair rows (``molsym.nn.geometry``): everything that depends only on |r_ij|
(radial basis, envelope, the radial networks of the embedding and of every
interaction) is evaluated once per pair row, and one gather reads each row's
I, A and S weights out for the 9 components of both directions.

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
from molsym.o3.cartesian import anticommutator_matrix, basis_matrix

# part (0 = I, 1 = A, 2 = S) of each of the 9 coefficients
PART_OF_COMPONENT = (0, 1, 1, 1, 2, 2, 2, 2, 2)
# sign of each coefficient of the edge basis (Id, skew(r̂), r̂r̂^T - Id/3) when r̂ -> -r̂
_REVERSE_SIGN = (1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

_CONSTANTS: dict = {}


def _constant(name: str, like: torch.Tensor) -> torch.Tensor:
    """Small constant tensors, cached per dtype and device: "part" (9,) int64, "sign" (9,),
    "part_sums" (3, 9) 0/1 matrix summing the components of each part."""
    key = (name, like.dtype, like.device)
    value = _CONSTANTS.get(key)
    if value is None:
        part = torch.tensor(PART_OF_COMPONENT, device=like.device)
        if name == "part":
            value = part
        elif name == "sign":
            value = torch.tensor(_REVERSE_SIGN, dtype=like.dtype, device=like.device)
        else:
            value = (part == torch.arange(3, device=like.device)[:, None]).to(like.dtype)
        _CONSTANTS[key] = value
    return value


def anticommutator(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Coefficients of A B + B A: a, b (9, N, C) -> (9, N, C)."""
    _, n, c = a.shape
    outer = (a.unsqueeze(1) * b.unsqueeze(0)).view(81, n * c)
    return (anticommutator_matrix(a) @ outer).view(9, n, c)


def square(a: torch.Tensor) -> torch.Tensor:
    """Coefficients of A A: a (9, N, C) -> (9, N, C)."""
    return 0.5 * anticommutator(a, a)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """X / (|X|^2 + 1) per node and channel, (9, N, C) -> (9, N, C)."""
    return x / ((x * x).sum(0) + 1.0)


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """|I|^2, |A|^2, |S|^2 (Frobenius) of coefficients (9, N, C), shape (3, N, C)."""
    _, n, c = x.shape
    return (_constant("part_sums", x) @ (x * x).view(9, n * c)).view(3, n, c)


def cartesian_to_coefficients(x: torch.Tensor) -> torch.Tensor:
    """Cartesian tensors (N, C, 3, 3) -> coefficients (9, N, C)."""
    n, c = x.shape[:2]
    return (basis_matrix(x) @ x.reshape(n * c, 9).T).view(9, n, c)


def coefficients_to_cartesian(x: torch.Tensor) -> torch.Tensor:
    """Coefficients (9, N, C) -> Cartesian tensors (N, C, 3, 3)."""
    _, n, c = x.shape
    return (x.reshape(9, n * c).T @ basis_matrix(x)).view(n, c, 3, 3)


def edge_weight_index(geometry: EdgeGeometry, like: torch.Tensor) -> torch.Tensor:
    """Flat index (9 * D,) into pair-row weights viewed as (P * 3, C): entry (k, d) selects the
    weight of part PART_OF_COMPONENT[k] of directed edge d's pair row (cached per geometry)."""
    key = "tensornet_weight_index"
    index = geometry.cache.get(key)
    if index is None:
        rows = geometry.directed_rows
        index = (rows.unsqueeze(0) * 3 + _constant("part", like).unsqueeze(1)).reshape(-1)
        geometry.cache[key] = index
    return index


def directed_part_weights(weights: torch.Tensor, geometry: EdgeGeometry) -> torch.Tensor:
    """Pair-row weights (P, 3, C) of the I, A, S parts -> (9, D, C), one per component and edge."""
    p, _, c = weights.shape
    index = edge_weight_index(geometry, weights)
    return weights.reshape(p * 3, c).index_select(0, index).view(9, -1, c)


def aggregate(values: torch.Tensor, receivers: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sum edge values (9, D, C) onto their receiving nodes -> (9, N, C)."""
    out = values.new_zeros(9, num_nodes, values.shape[-1])
    return out.index_add(1, receivers, values)


class PartwiseLinear(nn.Module):
    """Separate channel mixing of the I, A and S parts (no bias: keeps equivariance).

    Parameter ``weight`` (3, C, C): one C x C matrix per part.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, channels, channels) / math.sqrt(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients (9, N, C) -> (9, N, C): one batched product over the 9 components."""
        return torch.bmm(x, self.weight.index_select(0, _constant("part", x)))


def edge_basis(geometry: EdgeGeometry) -> torch.Tensor:
    """Coefficients of Id, skew(r̂) and r̂r̂^T - Id/3 per directed edge, shape (9, D)."""
    unit = geometry.pair_unit
    p = unit.shape[0]
    outer = (unit.unsqueeze(-1) * unit.unsqueeze(-2)).view(p, 9)
    rows = torch.cat((unit.new_full((1, p), math.sqrt(3.0)), math.sqrt(2.0) * unit.T,
                      basis_matrix(unit)[4:] @ outer.T))  # (9, P)
    if not geometry.symmetric:
        return rows
    return torch.cat((rows, rows * _constant("sign", unit).unsqueeze(1)), dim=1)


class TensorNetEmbedding(nn.Module):
    """Per-edge I0 = Id, A0 = skew(r̂), S0 = r̂r̂^T - Id/3 weighted by radial functions and
    both elements' embeddings, summed over neighbours, normalised and channel-mixed.

    The pair factor pair_mix([z_i, z_j]) is read from an element-pair table (S, S, C)
    built once per forward from ``pair_mix`` (same parameters, same values).
    """

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

    def pair_table(self) -> torch.Tensor:
        """pair_mix([z_a, z_b]) for all element pairs, shape (S, S, C)."""
        c = self.channels
        z, w = self.element_embedding.weight, self.pair_mix.weight
        return (z @ w[:, :c].T).unsqueeze(1) + (z @ w[:, c:].T).unsqueeze(0) + self.pair_mix.bias

    def forward(self, species: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """species (N,) element indices -> X, coefficients (9, N, C)."""
        i, j = geometry.directed_index
        n, c = species.shape[0], self.channels
        table = self.pair_table()
        s = table.shape[0]
        pair = table.view(s * s, c).index_select(0, species.index_select(0, i) * s + species.index_select(0, j))
        radial = self.radial_projection(geometry.pair_radial) * geometry.pair_envelope.unsqueeze(-1)
        weights = directed_part_weights(radial.view(-1, 3, c), geometry)  # (9, D, C)
        x = aggregate(weights * (edge_basis(geometry).unsqueeze(-1) * pair), i, n)
        scalars = self.scalar_mlp(self.norm((x * x).sum(0))).view(n, 3, c)
        return self.mix(x) * scalars.transpose(0, 1).index_select(0, _constant("part", x))


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
        """features (9, N, C) -> (9, N, C)."""
        i, j = geometry.directed_index
        n, c = features.shape[1], self.channels
        x = normalise(features)
        y = self.mix_in(x)
        radial = self.radial_mlp(geometry.pair_radial) * geometry.pair_envelope.unsqueeze(-1)
        weights = directed_part_weights(radial.view(-1, 3, c), geometry)  # (9, D, C)
        message = aggregate(y.index_select(1, j) * weights, i, n)
        d = self.mix_out(normalise(anticommutator(message, y)))
        return x + d + square(d)


class TensorNetInvariants(nn.Module):
    """X -> LayerNorm(|I|^2, |A|^2, |S|^2) -> Linear -> SiLU, shape (N, C)."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        c = settings.channels
        self.norm = nn.LayerNorm(3 * c)
        self.linear = nn.Linear(3 * c, c)
        self.act = nn.SiLU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (9, N, C) -> (N, C)."""
        norms = squared_norms(features).transpose(0, 1).reshape(features.shape[1], -1)  # (N, 3C)
        return self.act(self.linear(self.norm(norms)))


TENSORNET = Family(
    name="tensornet",
    form="cartesian",
    embedding=TensorNetEmbedding,
    interaction=TensorNetInteraction,
    invariants=TensorNetInvariants,
)
