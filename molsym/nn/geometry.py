"""Edge geometry, computed once per forward pass and shared by every layer.

Most edge quantities depend only on the distance |r_ij|, which is the same for
an edge (i, j, shift) and its reverse (j, i, -shift). When the edge list is
symmetric (every directed edge has its reverse, as in the full neighbour lists
of ``molsym.data.neighbours``), :class:`GeometryBuilder` computes lengths,
radial basis and cutoff envelope once per undirected pair (the *pair rows*)
and families that exploit it (TensorNet) evaluate their radial networks on
those rows only, using each row for both directions. The per-edge attributes
stay available for every family and are read out of the pair rows on first
access (same values: the reverse vector is the exact negative).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from e3nn import o3
from torch import nn

from molsym.data import keys as K
from molsym.nn.radial import BesselBasis, PolynomialCutoff
from molsym.o3.rotation import edge_frames, half_turn
from molsym.o3.wigner import wigner_blocks


def reverse_edges(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> torch.Tensor | None:
    """The reverse of every directed edge, or None when the edge list is not symmetric.

    Args:
        edge_index: (2, E) int64, edges (i, j).
        edge_shift: (E, 3) Cartesian lattice shifts (Å).
    Returns:
        reverse: (E,) int64 permutation with edge_index[:, reverse[e]] == (j_e, i_e) and
        edge_shift[reverse[e]] == -edge_shift[e] (exactly), reverse[reverse] == identity
        and reverse[e] != e; None if no such permutation exists (a half list, a list with
        an unmatched edge, or shifts that are not exact negatives of each other).
    Not differentiable (integer output); repeated edges are paired in a fixed order.
    """
    with torch.no_grad():
        i, j = edge_index[0], edge_index[1]
        e = i.shape[0]
        if e == 0:
            return i.new_zeros(0)
        n = int(torch.maximum(i.max(), j.max())) + 1
        forward_key, backward_key = i * n + j, j * n + i
        shift = edge_shift.detach()
        periodic = bool(shift.ne(0).any())
        forward_order = _lexsort(forward_key, shift if periodic else None)
        backward_order = _lexsort(backward_key, -shift if periodic else None)
        if not torch.equal(forward_key.index_select(0, forward_order), backward_key.index_select(0, backward_order)):
            return None
        reverse = torch.empty_like(forward_order)
        reverse[forward_order] = backward_order
        if periodic and not torch.equal(shift.index_select(0, reverse), -shift):
            return None
        if bool((reverse == torch.arange(e, device=reverse.device)).any()):
            return None  # an edge that is its own reverse (i == i with zero shift)
        return reverse


def _lexsort(key: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """Order sorting by (key, shift[:, 0], shift[:, 1], shift[:, 2]); key (E,) int64, shift (E, 3) or None."""
    if shift is None:
        return torch.argsort(key, stable=True)
    order = torch.argsort(shift[:, 2], stable=True)
    for column in (shift[:, 1], shift[:, 0], key):
        order = order.index_select(0, torch.argsort(column.index_select(0, order), stable=True))
    return order


class EdgeGeometry:
    """Geometry of the E directed edges of a graph.

    Per directed edge:
        edge_index: (2, E) int64, (i, j) with j a neighbour of i (messages flow j -> i).
        vectors: (E, 3) Å, r_ij = pos[j] - pos[i] + shift_ij.
        lengths: (E,) Å.
        unit: (E, 3) r_ij / |r_ij|.
        radial: (E, R) radial basis of the lengths.
        envelope: (E,) smooth cutoff weight, 0 at and beyond the cutoff.
        num_nodes: N.
    Per pair row (P rows; see ``symmetric``):
        pair_index: (2, P) int64, (i, j) of the row's edge.
        pair_vectors (P, 3), pair_lengths (P,), pair_unit (P, 3), pair_radial (P, R),
        pair_envelope (P,): the quantities above for the row's edge.
        symmetric: True when each row stands for two directed edges, (i, j) and its
            reverse (j, i) (vector -r_ij, same length, radial basis and envelope),
            P = E / 2; False when the rows are the E directed edges themselves
            (an edge list without matching reverses).
    Directed view of the pair rows (for aggregating row quantities over both directions
    in one pass): ``directed_index`` (2, D) int64 and :meth:`directed`, which repeat the
    rows once per direction they stand for; D = E when symmetric, D = P = E otherwise.
    The per-edge attributes are computed from the pair rows on first access.
    Spherical harmonics of ``unit`` (e3nn convention, component normalisation)
    are computed on first request and cached per lmax. Edge frames and their Wigner-D
    blocks (:meth:`directed_wigner`) are computed on first request, once per pair row, for
    degrees up to ``frame_lmax`` (the largest any layer asks for).
    """

    __slots__ = ("edge_index", "num_nodes", "pair_index", "pair_vectors", "pair_lengths", "pair_unit",
                 "pair_radial", "pair_envelope", "symmetric", "_edge_row", "_edge_sign", "_cache", "_sh",
                 "_directed_index", "_ahead", "frame_lmax", "_wigner")

    def __init__(self, edge_index, pair_index, pair_vectors, pair_lengths, pair_radial, pair_envelope,
                 num_nodes: int, edge_row: torch.Tensor | None = None, edge_sign: torch.Tensor | None = None,
                 ahead: dict | None = None, frame_lmax: int = 0):
        """edge_row (E,) int64: pair row of each edge; edge_sign (E,): +1 if the edge is its row's
        edge, -1 if it is the reverse. Both None when rows are the directed edges themselves.
        ahead: see :meth:`pair_weights`."""
        self.edge_index = edge_index
        self.num_nodes = num_nodes
        self.pair_index = pair_index
        self.pair_vectors = pair_vectors
        self.pair_lengths = pair_lengths
        self.pair_unit = pair_vectors / pair_lengths.unsqueeze(-1)
        self.pair_radial = pair_radial
        self.pair_envelope = pair_envelope
        self.symmetric = edge_row is not None
        self._edge_row = edge_row
        self._edge_sign = edge_sign
        self._cache: dict[str, torch.Tensor] = {}
        self._sh: dict[int, torch.Tensor] = {}
        self._directed_index: torch.Tensor | None = None
        self._ahead = ahead or {}
        self.frame_lmax = frame_lmax
        self._wigner: list[torch.Tensor] | None = None

    @property
    def directed_index(self) -> torch.Tensor:
        """(2, D) int64: the pair rows' edges (i, j), then, when symmetric, their reverses (j, i)."""
        if not self.symmetric:
            return self.pair_index
        if self._directed_index is None:
            self._directed_index = torch.cat((self.pair_index, self.pair_index.flip(0)), dim=1)
        return self._directed_index

    def pair_weights(self, network: nn.Module, num_radial: int | None = None) -> torch.Tensor:
        """Radial weights of the pair rows: network(basis) * pair_envelope, shape (P, K), where
        basis is the first ``num_radial`` functions of ``pair_radial`` (all when None).

        Weights computed ahead for this network (``ahead``: {network: (P, K) tensor}) are used
        as given; the caller then owns their dependence on the lengths
        (``molsym.models.compiled`` adds it by the chain rule).
        """
        weights = self._ahead.get(network)
        if weights is None:
            basis = self.pair_radial
            if num_radial is not None and num_radial < basis.shape[-1]:
                basis = basis[:, :num_radial]
            scaled = getattr(network, "scaled", None)  # a network that folds the envelope into its last layer
            if scaled is not None:
                return scaled(basis, self.pair_envelope)
            return network(basis) * self.pair_envelope.unsqueeze(-1)
        return weights

    def per_edge(self, values: torch.Tensor, odd: bool = False) -> torch.Tensor:
        """Pair-row values (P, ...) -> (E, ...) in the order of ``edge_index`` (sign-flipped on
        reversed edges if ``odd``)."""
        if not self.symmetric:
            return values
        out = values.index_select(0, self._edge_row)
        if odd:
            out = out * self._edge_sign.view((-1,) + (1,) * (values.dim() - 1))
        return out

    def directed(self, values: torch.Tensor, odd: bool = False) -> torch.Tensor:
        """Pair-row values (P, ...) -> (D, ...) in the order of ``directed_index``.

        ``odd``: the values change sign with the direction (vectors); otherwise they are
        the same for both directions (functions of the length).
        """
        if not self.symmetric:
            return values
        return torch.cat((values, -values if odd else values))

    def _per_edge(self, name: str, odd: bool = False) -> torch.Tensor:
        """Pair-row attribute ``name`` read out for every directed edge (sign-flipped if ``odd``)."""
        values = getattr(self, "pair_" + name)
        if not self.symmetric:
            return values
        out = self._cache.get(name)
        if out is None:
            out = self.per_edge(values, odd)
            self._cache[name] = out
        return out

    @property
    def vectors(self) -> torch.Tensor:
        return self._per_edge("vectors", odd=True)

    @property
    def lengths(self) -> torch.Tensor:
        return self._per_edge("lengths")

    @property
    def unit(self) -> torch.Tensor:
        return self._per_edge("unit", odd=True)

    @property
    def radial(self) -> torch.Tensor:
        return self._per_edge("radial")

    @property
    def envelope(self) -> torch.Tensor:
        return self._per_edge("envelope")

    def directed_wigner(self, lmax: int) -> list[torch.Tensor]:
        """Wigner-D blocks of the edge frames (``molsym.o3.rotation``) in the order of
        ``directed_index``: D^l (D, 2l + 1, 2l + 1) for l = 0..lmax, each rotating degree-l
        coefficients into the frame where the edge r_ij lies along +y. Computed once per
        pair row (the reverse edge's frame is the half turn F times the row's: D(F) D(R))."""
        if self._wigner is None or len(self._wigner) <= lmax:
            top = max(lmax, self.frame_lmax)
            rows = wigner_blocks(edge_frames(self.pair_unit), top)
            if self.symmetric:
                flip = wigner_blocks(half_turn(self.pair_unit).unsqueeze(0), top)
                rows = [torch.cat((d, f @ d)) for d, f in zip(rows, flip)]
            self._wigner = rows
        return self._wigner[:lmax + 1]

    def spherical_harmonics(self, lmax: int) -> torch.Tensor:
        """Y_lm(r̂_ij) for l = 0..lmax, shape (E, (lmax+1)^2), e3nn order and component norm."""
        sh = self._sh.get(lmax)
        if sh is None:
            sh = o3.spherical_harmonics(list(range(lmax + 1)), self.unit, normalize=False, normalization="component")
            self._sh[lmax] = sh
        return sh


class PairRows(NamedTuple):
    """The pair rows of an edge list (integer bookkeeping, no gradients).

    row_edges (P,) int64: the edge of each row; edge_row (E,) int64: the row of every
    directed edge; edge_reversed (E,) bool: True where the edge is its row's reverse.
    All None when the rows are the directed edges themselves (no symmetric pairing).
    """

    row_edges: torch.Tensor | None
    edge_row: torch.Tensor | None
    edge_reversed: torch.Tensor | None


def pair_rows(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> PairRows:
    """One row per undirected pair (the edge of lower index) when the list is symmetric,
    else one row per directed edge. edge_index (2, E) int64, edge_shift (E, 3) Å."""
    reverse = reverse_edges(edge_index, edge_shift)
    if reverse is None:
        return PairRows(None, None, None)
    with torch.no_grad():
        edges = torch.arange(edge_index.shape[1], device=edge_index.device)
        first = edges < reverse  # the row's edge: the lower index of each pair
        row_of_first = torch.cumsum(first, 0) - 1
        edge_row = row_of_first.index_select(0, torch.minimum(edges, reverse))
        return PairRows(first.nonzero().squeeze(-1), edge_row, ~first)


def pair_vectors(graph: dict[str, torch.Tensor], rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair rows' edges (2, P) int64 and vectors r_ij = pos[j] - pos[i] + shift_ij (P, 3) Å."""
    pos, edge_index, shift = graph[K.POSITIONS], graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT]
    if rows.row_edges is not None:
        edge_index, shift = edge_index.index_select(1, rows.row_edges), shift.index_select(0, rows.row_edges)
    return edge_index, pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0]) + shift


class GeometryBuilder(nn.Module):
    """Graph dict -> :class:`EdgeGeometry` (edge vectors, radial basis, cutoff envelope).

    Finds the reverse of every edge (:func:`pair_rows`) and evaluates the geometry on
    one edge per undirected pair, the one of lower index; falls back to all directed
    edges when the list is not symmetric.
    """

    def __init__(self, cutoff: float, num_radial: int, frame_lmax: int = 0):
        """``frame_lmax``: the largest degree of edge-frame Wigner-D blocks any layer reads."""
        super().__init__()
        self.cutoff = float(cutoff)
        self.frame_lmax = int(frame_lmax)
        self.radial_basis = BesselBasis(cutoff, num_radial)
        self.envelope = PolynomialCutoff(cutoff)

    def radial(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lengths (P,) Å -> radial basis (P, R) and envelope (P,)."""
        return self.radial_basis(lengths), self.envelope(lengths)

    def radial_derivative(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lengths (P,) Å -> derivatives along the length of the basis (P, R) and envelope (P,)."""
        return self.radial_basis.derivative(lengths), self.envelope.derivative(lengths)

    def forward(self, graph: dict[str, torch.Tensor], rows: PairRows | None = None,
                ahead: dict | None = None) -> EdgeGeometry:
        """``rows``: the pair rows of the graph's edges when already known (:func:`pair_rows`);
        ``ahead``: radial weights computed ahead (:meth:`EdgeGeometry.pair_weights`)."""
        pos = graph[K.POSITIONS]
        if rows is None:
            rows = pair_rows(graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT])
        pair_index, vectors = pair_vectors(graph, rows)
        edge_sign = None if rows.edge_reversed is None else 1.0 - 2.0 * rows.edge_reversed.to(pos.dtype)
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        return EdgeGeometry(graph[K.EDGE_INDEX], pair_index, vectors, lengths, *self.radial(lengths),
                            pos.shape[0], rows.edge_row, edge_sign, ahead, self.frame_lmax)
