"""Edge frames: a rotation per edge that takes its direction onto the polar axis (e3nn's y).

R(r̂) is the smallest rotation taking r̂ to ŷ (Rodrigues, without angles)::

    v = r̂ x ŷ,  c = r̂ . ŷ,  R = Id + [v]x + [v]x^2 / (1 + c)

a rational function of r̂, smooth wherever c > -1. Directions with r̂_y < 0 are first
turned by the half turn F about z ((x, y, z) -> (-x, -y, z)), which maps them to r̂_y > 0:
R(r̂) = R_0(F r̂) F. Each chart is used only where 1 + c >= 1, far from its one singular
direction, so there is no angle, no arccos, no clamp and no division by a small number:
values and all derivatives are exact for every direction, including r̂ within any
distance of +y or -y (no gimbal lock). The frame jumps by a roll about y where r̂_y changes
sign; a convolution that commutes with rolls about y (the SO(2) convolution of
``molsym.nn.interactions.escn``) gives the same result in either frame, so its output and
its derivatives of every order are continuous there.

The reverse edge -r̂ uses F R(r̂) (F ŷ = -ŷ), so one frame per pair row serves both
directions.
"""
from __future__ import annotations

import torch

# the half turn about z: (x, y, z) -> (-x, -y, z); maps -y to +y
HALF_TURN = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def half_turn(like: torch.Tensor) -> torch.Tensor:
    """F (3, 3) in ``like``'s dtype and device."""
    return torch.tensor(HALF_TURN, dtype=like.dtype, device=like.device)


def _minimal_rotation(u: torch.Tensor) -> torch.Tensor:
    """R (E, 3, 3) with R u = ŷ for unit vectors u (E, 3) with u_y >= 0 (Rodrigues, no angles)."""
    x, y, z = u.unbind(-1)
    # v = u x ŷ = (-z, 0, x);  [v]x^2 = v v^T - |v|^2 Id;  R = Id + [v]x + [v]x^2 / (1 + y)
    k = 1.0 / (1.0 + y)
    rows = (
        (1.0 - x * x * k, -x, -x * z * k),
        (x, y, z),  # 1 - (x^2 + z^2) / (1 + y) = y on the unit sphere
        (-x * z * k, -z, 1.0 - z * z * k),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def edge_frames(unit: torch.Tensor) -> torch.Tensor:
    """Rotations R (E, 3, 3), det +1, with R @ unit[e] = ŷ, for unit vectors (E, 3).

    Deterministic and, on each side of r̂_y = 0, a rational function of r̂ with no
    singularity within reach (see the module docstring).
    """
    flip = half_turn(unit)
    lower = unit[:, 1] < 0
    u = torch.where(lower.unsqueeze(-1), unit @ flip.T, unit)
    rotation = _minimal_rotation(u)
    return torch.where(lower[:, None, None], rotation @ flip, rotation)
