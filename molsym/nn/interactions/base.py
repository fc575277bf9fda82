"""The interaction protocol shared by every family.

A family is three modules built from one :class:`ModelSettings`:

* ``embedding(species, geometry, graph) -> features``: element indices (N,)
  to the family's initial node features;
* ``interaction(features, geometry, graph) -> features``: one message-passing
  layer;
* ``invariants(features) -> (N, channels)``: rotation-invariant node scalars
  for the readout.

Features keep the family's natural form, named by ``Family.form``:
``"cartesian"`` is rank-2 tensors X = I + A + S held by their 9 coefficients in the
orthonormal 0e + 1o + 2e basis of ``molsym.o3.cartesian``, shape (9, N, C)
(component-major); ``"sh"`` is spherical-harmonic
coefficients (N, (lmax+1)^2, C) with parity (-1)^l. The core converts between
forms exactly (``molsym.o3.cartesian``) so that families can be stacked.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from molsym.nn.geometry import EdgeGeometry

FORMS = ("cartesian", "sh")


@dataclass(frozen=True)
class ModelSettings:
    """Hyper-parameters that every family reads (one place, no long argument lists)."""

    num_elements: int
    channels: int = 128
    num_radial: int = 32
    cutoff: float = 4.5
    lmax: int = 2
    radial_hidden: int = 64
    avg_num_neighbors: float = 16.0


class Interaction(nn.Module):
    """One message-passing layer: ``forward(features, geometry, graph) -> features``.

    A layer that weights edges by ``geometry.pair_weights(network)`` lists those radial
    networks in :meth:`radial_networks`, so that their values and length derivatives
    can be computed ahead of a compiled graph (``molsym.models.compiled``).
    """

    def radial_networks(self) -> list[nn.Module]:
        """Networks this layer evaluates through ``geometry.pair_weights``."""
        return []

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:  # noqa: D102
        raise NotImplementedError  # abstract


@dataclass(frozen=True)
class Family:
    """An interaction family: its feature form and the classes that build its modules."""

    name: str
    form: str
    embedding: type
    interaction: type
    invariants: type

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"family {self.name!r}: unknown feature form {self.form!r}, expected one of {FORMS}")
