"""Edge geometry, computed once per forward pass and shared by every layer."""
from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from molsym.data import keys as K
from molsym.nn.radial import BesselBasis, PolynomialCutoff


class EdgeGeometry:
    """Geometry of the E directed edges of a graph.

    Attributes:
        edge_index: (2, E) int64, (i, j) with j a neighbour of i (messages flow j -> i).
        vectors: (E, 3) Å, r_ij = pos[j] - pos[i] + shift_ij.
        lengths: (E,) Å.
        unit: (E, 3) r_ij / |r_ij|.
        radial: (E, R) radial basis of the lengths.
        envelope: (E,) smooth cutoff weight, 0 at and beyond the cutoff.
        num_nodes: N.
    Spherical harmonics of ``unit`` (e3nn convention, component normalisation)
    are computed on first request and cached per lmax.
    """

    __slots__ = ("edge_index", "vectors", "lengths", "unit", "radial", "envelope", "num_nodes", "_sh")

    def __init__(self, edge_index, vectors, lengths, radial, envelope, num_nodes: int):
        self.edge_index = edge_index
        self.vectors = vectors
        self.lengths = lengths
        self.unit = vectors / lengths.unsqueeze(-1)
        self.radial = radial
        self.envelope = envelope
        self.num_nodes = num_nodes
        self._sh: dict[int, torch.Tensor] = {}

    def spherical_harmonics(self, lmax: int) -> torch.Tensor:
        """Y_lm(r̂_ij) for l = 0..lmax, shape (E, (lmax+1)^2), e3nn order and component norm."""
        sh = self._sh.get(lmax)
        if sh is None:
            sh = o3.spherical_harmonics(list(range(lmax + 1)), self.unit, normalize=False, normalization="component")
            self._sh[lmax] = sh
        return sh


class GeometryBuilder(nn.Module):
    """Graph dict -> :class:`EdgeGeometry` (edge vectors, radial basis, cutoff envelope)."""

    def __init__(self, cutoff: float, num_radial: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.radial_basis = BesselBasis(cutoff, num_radial)
        self.envelope = PolynomialCutoff(cutoff)

    def forward(self, graph: dict[str, torch.Tensor]) -> EdgeGeometry:
        pos = graph[K.POSITIONS]
        edge_index = graph[K.EDGE_INDEX]
        vectors = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0]) + graph[K.EDGE_SHIFT]
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        return EdgeGeometry(
            edge_index, vectors, lengths, self.radial_basis(lengths), self.envelope(lengths), pos.shape[0]
        )
