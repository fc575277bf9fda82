"""Radial basis and smooth cutoff envelope of edge lengths.

The envelope is the polynomial of Klicpera et al. (DimeNet) with p = 6: it is 1
at r = 0 and reaches 0 at the cutoff with vanishing first and second
derivatives, so energies, forces and Hessians are continuous as a neighbour
crosses the cutoff.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialCutoff(nn.Module):
    """u(r) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = r/r_c; 0 for r >= r_c."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """lengths (E,) Å -> weights (E,) in [0, 1]."""
        p = self.p
        x = lengths / self.cutoff
        xp = x.pow(p)
        u = 1.0 - 0.5 * (p + 1) * (p + 2) * xp + p * (p + 2) * xp * x - 0.5 * p * (p + 1) * xp * x * x
        return torch.where(x < 1.0, u, torch.zeros_like(u))

    def derivative(self, lengths: torch.Tensor) -> torch.Tensor:
        """du/dr, lengths (E,) Å -> (E,) 1/Å; 0 for r >= r_c."""
        p = self.p
        x = lengths / self.cutoff
        xp1 = x.pow(p - 1)
        du = 0.5 * p * (p + 1) * (p + 2) * xp1 * (-1.0 + 2.0 * x - x * x) / self.cutoff
        return torch.where(x < 1.0, du, torch.zeros_like(du))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, p={self.p}"


class BesselBasis(nn.Module):
    """sqrt(2/r_c) sin(n pi r / r_c) / r, n = 1..num_radial (frequencies trainable)."""

    def __init__(self, cutoff: float, num_radial: int, trainable: bool = True):
        super().__init__()
        if num_radial < 1:
            raise ValueError(f"num_radial must be >= 1, got {num_radial}")
        self.cutoff = float(cutoff)
        self.prefactor = math.sqrt(2.0 / self.cutoff)
        freqs = torch.arange(1, num_radial + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff
        if trainable:
            self.frequencies = nn.Parameter(freqs)
        else:
            self.register_buffer("frequencies", freqs)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """lengths (E,) Å -> basis (E, num_radial) 1/Å."""
        r = lengths.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r) / r

    def derivative(self, lengths: torch.Tensor) -> torch.Tensor:
        """d basis / dr, lengths (E,) Å -> (E, num_radial) 1/Å²."""
        r = lengths.unsqueeze(-1)
        phase = self.frequencies * r
        return self.prefactor * (self.frequencies * torch.cos(phase) - torch.sin(phase) / r) / r
