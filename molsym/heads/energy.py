"""Energy readout: node invariants -> atomic energies with per-element E0, scale and shift."""
from __future__ import annotations

import torch
from torch import nn


class EnergyReadout(nn.Module):
    """E_i = scale * MLP(h_i) + shift + E0[Z_i] (eV).

    ``e0`` (num_elements,), ``scale`` and ``shift`` are buffers: fitted from data
    (isolated-atom energies or least squares, and force/energy statistics),
    not trained by gradient descent.
    """

    def __init__(self, channels: int, num_elements: int):
        super().__init__()
        hidden = max(channels // 2, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.register_buffer("e0", torch.zeros(num_elements))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))

    def forward(self, invariants: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """invariants (N, C), species (N,) element indices -> atomic energies (N,) eV."""
        return self.scale * self.mlp(invariants).squeeze(-1) + self.shift + self.e0.index_select(0, species)
