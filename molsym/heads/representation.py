"""What a head reads: the model's representation of one graph (or batch)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from molsym.nn.geometry import EdgeGeometry


class Representation(NamedTuple):
    """The representation every head reads, whatever the family or mixed stack.

    species: (N,) int64 element indices (position in the model's ``elements``).
    geometry: the :class:`EdgeGeometry` the layers used (edges, vectors Å, radial basis).
    features: (N, 12, C) final node features in the canonical 0e + 1o + 1e + 2e form up to
        l = 2 (``molsym.nn.forms.canonical_features``): blocks [0:1], [1:4], [4:7], [7:12].
    graph: the graph dict (``molsym.data.keys``: batch, cell, ...).
    """

    species: torch.Tensor
    geometry: EdgeGeometry
    features: torch.Tensor
    graph: dict
