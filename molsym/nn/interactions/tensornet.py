"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023): Cartesian rank-2 tensor features.

Node features are C channels of 3x3 tensors X = I + A + S. They are held, in
form ``"cartesian"``, by their 9 coefficients in the orthonormal I/A/S basis of
``molsym.o3.cartesian`` (I -> 1 number (0e), A -> 3 (1o), S -> 5 (2e)),
component-major: shape (9, N, C). The map is exact and orthonormal, so

* the parts are the contiguous blocks [0:1], [1:4], [4:9], and channel mixing
  of every part is one batched product (9, N, C) @ (9, C, C) with each part's
  C x C matrix repeated over its components;
* norms are sums over the leading axis (coefficient norms equal Frobenius norms);
* 3x3 matrix products (Y M + M Y, dX dX) are evaluated in a channels-last
  Cartesian layout (3, 3, N*C), as broadcast multiply-adds vectorised over N*C.

Neighbour aggregation moves 9 numbers per channel, one part at a time, with
the per-edge radial weights (E, C) broadcast over the part's components (never
expanded to (E, 9, C)), in chunks of edges so that temporaries stay small.
Everything that depends only on |r_ij| (radial basis, envelope, the radial
networks of the embedding and of every interaction) is evaluated once per pair
row of the geometry (``molsym.nn.geometry``), i.e. once per pair of reverse
edges, and repeated for both directions.

O(3): the antisymmetric part is built from skew(r̂), a polar vector, so it is
parity-odd, and I, S are even; the update Y M + M Y and dX + dX^2 preserve that
parity assignment, so energies are invariant under reflections as well.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from molsym.nn.chunking import chunk_values
from molsym.nn.forms import CARTESIAN, FeatureForm
from molsym.nn.geometry import EdgeGeometry
from molsym.nn.interactions.base import Family, Interaction, RadialNetwork, check_positive_int
from molsym.o3.cartesian import basis_matrix, change_basis, irreps_basis


@dataclass(frozen=True)
class TensorNetSettings:
    """Keys of a TensorNet layer: ``channels`` (C, tensors per atom) and ``num_radial`` (radial
    basis functions its radial networks read)."""

    channels: int = 128
    num_radial: int = 32

    def __post_init__(self):
        check_positive_int("channels", self.channels)
        check_positive_int("num_radial", self.num_radial)


def tensornet_form(settings: TensorNetSettings, previous: FeatureForm | None = None) -> FeatureForm:
    """A TensorNet layer (and its embedding) takes and returns C channels of 0e + 1o + 2e in the
    cartesian form, whatever came before."""
    return FeatureForm.cartesian(settings.channels)

# sizes of the parts (I, A, S) in the 9 coefficients, in order
_SIZES = (1, 3, 5)
# part (0 = I, 1 = A, 2 = S) of each of the 9 coefficients
PART_OF_COMPONENT = (0, 1, 1, 1, 2, 2, 2, 2, 2)

_CONSTANTS: dict = {}

# edges per aggregation chunk times channels (2048 edges at 128 channels)
_CHUNK_VALUES = 1 << 18


def _constant(name: str, like: torch.Tensor) -> torch.Tensor:
    """Small constant tensors, cached per dtype and device: "part" (9,) int64 and
    "part_sums" (3, 9), the 0/1 matrix summing the components of each part."""
    key = (name, like.dtype, like.device)
    value = None if torch.compiler.is_compiling() else _CONSTANTS.get(key)  # a traced graph holds its own
    if value is None:
        part = torch.tensor(PART_OF_COMPONENT, device=like.device)
        if name == "part":
            value = part
        else:
            value = (part == torch.arange(3, device=like.device)[:, None]).to(like.dtype)
        if not torch.compiler.is_compiling():
            _CONSTANTS[key] = value
    return value


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Coefficients (9, N, C) -> Cartesian channels-last (3, 3, N*C)."""
    return change_basis(x.reshape(9, -1), to_coefficients=False, axis=0).view(3, 3, -1)


def _from_channels_last(m: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """Cartesian channels-last (3, 3, N*C) -> coefficients (9, N, C)."""
    return change_basis(m.reshape(9, -1), to_coefficients=True, axis=0).view(9, n, c)


def _matmul3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3x3 products over the last axis: (3, 3, L) x (3, 3, L) -> (3, 3, L)."""
    return (a.unsqueeze(2) * b.unsqueeze(0)).sum(1)


def _product_terms(symmetric: bool) -> tuple[tuple[tuple[int, int, float], ...], ...]:
    """Nonzero structure constants of the 3x3 matrix product in the coefficient basis.

    With X = sum_i x_i Q_i (``irreps_basis``, orthonormal), the coefficients of X Y are
    (X Y)_k = sum_ij c_kij x_i y_j, c_kij = <Q_k, Q_i Q_j>_F. Returns, for every k, the
    terms (i, j, g) of (X Y + Y X)_k = sum g x_i y_j (g = c_kij + c_kji; 83 terms in all);
    with ``symmetric``, those of (X X)_k = sum over i <= j of g x_i x_j (52 terms).
    """
    q = irreps_basis(torch.float64)
    c = torch.einsum("kac,iab,jbc->kij", q, q, q)
    g = c + c.transpose(1, 2)
    terms = []
    for k in range(9):
        row = []
        for i in range(9):
            for j in range(i if symmetric else 0, 9):
                value = float(g[k, i, j] / 2 if symmetric and i == j else g[k, i, j])
                if abs(value) > 1e-12:
                    row.append((i, j, value))
        terms.append(tuple(row))
    return tuple(terms)


def _unrolled_product(name: str, terms) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function (a, b) -> (9, N, C) evaluating sum over ``terms`` (i, j, g) of g a_i b_j
    for each output coefficient, a, b (9, N, C), with the constants written into its code
    (so a compiler treats them as literals). Pointwise multiply-adds only: a compiler fuses
    them into one loop over N*C in the forward and in the backward."""
    lines = [f"def {name}(a, b):",
             "    " + ", ".join(f"a{i}" for i in range(9)) + " = a.unbind(0)",
             "    " + ", ".join(f"b{i}" for i in range(9)) + " = b.unbind(0)"]
    for k, row in enumerate(terms):
        lines.append(f"    c{k} = " + " + ".join(f"{g!r} * a{i} * b{j}" for i, j, g in row))
    lines.append("    return torch.stack((" + ", ".join(f"c{k}" for k in range(9)) + "))")
    namespace = {"torch": torch}
    exec(compile("\n".join(lines), f"<molsym {name}>", "exec"), namespace)
    return namespace[name]


# A B + B A (83 terms) and A A (52 terms) in the coefficient basis
unrolled_anticommutator = _unrolled_product("unrolled_anticommutator", _product_terms(symmetric=False))
unrolled_square = _unrolled_product("unrolled_square", _product_terms(symmetric=True))


def anticommutator(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Coefficients of A B + B A: a, b (9, N, C) -> (9, N, C).

    Eager: 3x3 products in a Cartesian channels-last layout (few large kernels); in a
    compiled graph: the unrolled structure constants (``unrolled_anticommutator``)."""
    if torch.compiler.is_compiling():
        return unrolled_anticommutator(a, b)
    _, n, c = a.shape
    ca, cb = _channels_last(a), _channels_last(b)
    return _from_channels_last(_matmul3(ca, cb) + _matmul3(cb, ca), n, c)


def square(a: torch.Tensor) -> torch.Tensor:
    """Coefficients of A A: a (9, N, C) -> (9, N, C) (as :func:`anticommutator`)."""
    if torch.compiler.is_compiling():
        return unrolled_square(a, a)
    _, n, c = a.shape
    ca = _channels_last(a)
    return _from_channels_last(_matmul3(ca, ca), n, c)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """X / (|X|^2 + 1) per node and channel, (9, N, C) -> (9, N, C)."""
    return x / ((x * x).sum(0) + 1.0)


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """|I|^2, |A|^2, |S|^2 (Frobenius) of coefficients (9, N, C), shape (3, N, C)."""
    _, n, c = x.shape
    return (_constant("part_sums", x) @ (x * x).view(9, n * c)).view(3, n, c)


def aggregate(parts, weights: torch.Tensor, receivers: torch.Tensor, n: int,
               senders: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over edges of per-part values times per-part weights onto the receiving nodes.

    parts: 3 tensors (k, E, 1) of edge values, or with ``senders`` (E,) 3 tensors
    (k, N, C) of node values gathered from the senders (k = 1, 3, 5); weights (E, 3, C);
    receivers (E,) -> coefficients (9, N, C). Edges are processed in chunks so that the
    (k, chunk, C) temporaries stay small; the sums go into fresh accumulators.
    """
    c = weights.shape[-1]
    if torch.jit.is_tracing():
        # a trace would freeze the example's number of chunks and drop the edges of any later
        # chunk (molsym.export): one pass over all edges keeps the traced graph shape-generic
        weight_chunks = [(w,) for w in weights.unbind(1)]
        value_chunks = None if senders is not None else [(v,) for v in parts]
        sender_chunks = None if senders is None else (senders,)
        receiver_chunks = (receivers,)
    else:
        step = max(1, chunk_values(_CHUNK_VALUES, weights.device) // c)  # far larger on a GPU
        # split (not sliced per chunk): the backward of a split is one concatenation
        weight_chunks = [w.split(step) for w in weights.unbind(1)]
        value_chunks = None if senders is not None else [v.split(step, dim=1) for v in parts]
        sender_chunks = None if senders is None else senders.split(step)
        receiver_chunks = receivers.split(step)
    out = [weights.new_zeros(k, n, c) for k in _SIZES]
    for m, rec in enumerate(receiver_chunks):
        for p in range(3):
            if senders is None:
                values = value_chunks[p][m]
            else:
                values = parts[p].index_select(1, sender_chunks[m])
            out[p].index_add_(1, rec, values * weight_chunks[p][m])
    return torch.cat(out)


class PartwiseLinear(nn.Module):
    """Separate channel mixing of the I, A and S parts (no bias: keeps equivariance).

    Parameter ``weight`` (3, C, C): one C x C matrix per part.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, channels, channels) / math.sqrt(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients (9, N, C) -> (9, N, C): one batched product over the 9 components
        (in a compiled graph, one (k N, C) @ (C, C) product per part, which inductor runs faster)."""
        if torch.compiler.is_compiling():
            _, n, c = x.shape
            return torch.cat([(part.reshape(-1, c) @ self.weight[p]).view(-1, n, c)
                              for p, part in enumerate(x.split(_SIZES))])
        return torch.bmm(x, self.weight.index_select(0, _constant("part", x)))


def edge_basis(unit: torch.Tensor):
    """Coefficients of Id, skew(r̂) and r̂r̂^T - Id/3 per edge: parts (1, E, 1), (3, E, 1), (5, E, 1)."""
    e = unit.shape[0]
    outer = (unit.unsqueeze(-1) * unit.unsqueeze(-2)).view(e, 9)
    l2 = basis_matrix(unit)[4:] @ outer.T  # (5, E)
    ones = unit.new_full((1, e), math.sqrt(3.0))
    return ones.unsqueeze(-1), (math.sqrt(2.0) * unit.T).unsqueeze(-1), l2.unsqueeze(-1)


class TensorNetEmbedding(nn.Module):
    """Per-edge I0 = Id, A0 = skew(r̂), S0 = r̂r̂^T - Id/3 weighted by radial functions and
    both elements' embeddings, summed over neighbours, normalised and channel-mixed.

    The pair factor pair_mix([z_i, z_j]) is read from an element-pair table (S, S, C)
    built once per forward from ``pair_mix`` (same parameters, same values).
    """

    message_hops = 1  # it sums over neighbours: one hop of the receptive field (molsym.export)

    def __init__(self, settings: TensorNetSettings, num_elements: int):
        super().__init__()
        c = settings.channels
        self.channels, self.num_radial = c, settings.num_radial
        self.output_form = FeatureForm.cartesian(c)
        self.element_embedding = nn.Embedding(num_elements, c)
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
        radial = geometry.pair_weights(self.radial_projection, self.num_radial).view(-1, 3, c)
        weights = geometry.directed(radial) * pair.unsqueeze(1)  # (D, 3, C)
        x = aggregate(edge_basis(geometry.directed(geometry.pair_unit, odd=True)), weights, i, n)  # (9, N, C)
        scalars = self.scalar_mlp(self.norm((x * x).sum(0))).view(n, 3, c)
        return self.mix(x) * scalars.transpose(0, 1).index_select(0, _constant("part", x))


class TensorNetInteraction(Interaction):
    """X -> X/(|X|^2+1); Y = mix(I, A, S); M_i = sum_j f(r_ij) (I_j, A_j, S_j) parts;
    P = Y M + M Y, normalised, decomposed, mixed -> dX; X' = X + dX + dX^2."""

    def __init__(self, settings: TensorNetSettings, input_form: FeatureForm):
        super().__init__()
        c = settings.channels
        if input_form != FeatureForm.cartesian(c):
            raise ValueError(f"a TensorNet layer of {c} channels takes {FeatureForm.cartesian(c).describe()}, "
                             f"got {input_form.describe()}")
        self.channels, self.num_radial = c, settings.num_radial
        self.output_form = input_form
        self.radial_mlp = nn.Sequential(
            nn.Linear(settings.num_radial, c), nn.SiLU(),
            nn.Linear(c, 2 * c), nn.SiLU(),
            nn.Linear(2 * c, 3 * c), nn.SiLU(),
        )
        self.mix_in = PartwiseLinear(c)
        self.mix_out = PartwiseLinear(c)

    def radial_networks(self) -> list[RadialNetwork]:
        return [RadialNetwork(self.radial_mlp, self.num_radial)]

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """features (9, N, C) -> (9, N, C)."""
        n, c = features.shape[1], self.channels
        x = normalise(features)
        y = self.mix_in(x)
        i, j = geometry.directed_index
        weights = geometry.directed(geometry.pair_weights(self.radial_mlp, self.num_radial).view(-1, 3, c))  # (D, 3, C)
        message = aggregate(y.split(_SIZES), weights, i, n, senders=j)
        d = self.mix_out(normalise(anticommutator(message, y)))
        return x + d + square(d)


class TensorNetInvariants(nn.Module):
    """X -> LayerNorm(|I|^2, |A|^2, |S|^2) -> Linear -> SiLU, shape (N, C)."""

    def __init__(self, settings: TensorNetSettings, form: FeatureForm):
        super().__init__()
        if form.kind != CARTESIAN:
            raise ValueError(f"TensorNet invariants read the cartesian form, got {form.describe()}")
        c = form.channels
        self.channels = c
        self.norm = nn.LayerNorm(3 * c)
        self.linear = nn.Linear(3 * c, c)
        self.act = nn.SiLU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (9, N, C) -> (N, C)."""
        norms = squared_norms(features).transpose(0, 1).reshape(features.shape[1], -1)  # (N, 3C)
        return self.act(self.linear(self.norm(norms)))


TENSORNET = Family(
    name="tensornet",
    settings=TensorNetSettings,
    input_form=tensornet_form,
    output_form=tensornet_form,
    embedding_form=tensornet_form,
    embedding=TensorNetEmbedding,
    interaction=TensorNetInteraction,
    invariants=TensorNetInvariants,
)
