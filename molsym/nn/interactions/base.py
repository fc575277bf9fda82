"""The protocol every interaction family follows, and the validation of its settings.

A family (:class:`Family`) is one file under ``molsym/nn/interactions/`` that declares

* ``settings``: a frozen dataclass of the keys a layer of this family reads, with
  defaults and validation in ``__post_init__`` (see :func:`check_positive_int` and
  friends); the model config's global keys are defaults that a per-layer entry
  overrides (``molsym.models.builder``);
* ``input_form(settings, previous) -> FeatureForm``: the feature form the layer takes,
  given the form the layer before it produced (``molsym.nn.forms``: the core converts
  ``previous`` into it, exactly or by a learned map, or refuses);
* ``output_form(settings, input_form) -> FeatureForm``: the form the layer returns;
* ``embedding_form(settings) -> FeatureForm`` and ``embedding(settings, num_elements)``:
  element indices (N,) -> initial features of that form (used when the family's layer
  comes first);
  the embedding module's class attribute ``message_hops`` (0 or 1) says whether it reads
  neighbours: the receptive field is (layers + message_hops) x cutoff (``molsym.export``;
  an embedding without it counts as 1);
* ``interaction(settings, input_form)``: one message-passing layer
  (:class:`Interaction`), ``forward(features, geometry, graph) -> features``, with
  ``output_form``;
* ``invariants(settings, form)``: features -> rotation-invariant node scalars (N, channels)
  for the energy readout, with ``channels`` (used when the family's layer comes last).

Adding a family is one such file and one line in the builder's table
(``molsym.models.builder.FAMILIES``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from molsym.nn.forms import FeatureForm
from molsym.nn.geometry import EdgeGeometry


class RadialNetwork(NamedTuple):
    """A radial network that a layer evaluates through ``EdgeGeometry.pair_weights``:
    it reads the first ``num_radial`` functions of the shared radial basis."""

    network: nn.Module
    num_radial: int


class Interaction(nn.Module):
    """One message-passing layer: ``forward(features, geometry, graph) -> features``.

    ``output_form`` (:class:`~molsym.nn.forms.FeatureForm`) describes what it returns. A
    layer that weights edges by ``geometry.pair_weights(network, num_radial)`` lists those
    networks in :meth:`radial_networks`, so that their values and length derivatives can be
    computed ahead of a compiled graph (``molsym.models.compiled``).
    """

    output_form: FeatureForm
    frame_lmax: int = 0  # largest degree of edge-frame Wigner-D blocks the layer reads (EdgeGeometry)

    def radial_networks(self) -> list[RadialNetwork]:
        """Networks this layer evaluates through ``geometry.pair_weights``."""
        return []

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:  # noqa: D102
        raise NotImplementedError  # abstract


@dataclass(frozen=True)
class Family:
    """An interaction family: its settings and the constructors of its modules."""

    name: str
    settings: type
    input_form: Callable[[object, FeatureForm], FeatureForm]
    output_form: Callable[[object, FeatureForm], FeatureForm]
    embedding_form: Callable[[object], FeatureForm]
    embedding: Callable
    interaction: Callable
    invariants: Callable
    compiles: bool = True  # whether molsym.models.compiled can trace it (else eager fallback)


# --- validation helpers for settings dataclasses -----------------------------------


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name!r} must be a positive integer, got {value!r}")


def check_non_negative_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name!r} must be an integer >= 0, got {value!r}")


def check_positive_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name!r} must be a positive number, got {value!r}")


def check_one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name!r} must be one of {list(choices)}, got {value!r}")
