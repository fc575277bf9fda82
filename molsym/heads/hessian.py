"""HIP Hessian head (Burger et al., 2025): the Hessian predicted directly, without differentiating.

The Hessian H = d^2E/dx^2 (eV/Å²) of N atoms is assembled from 3x3 blocks: a diagonal block
H_ii per atom and an off-diagonal block H_ij per pair of atoms closer than the head's cutoff
(zero beyond it). Every block is built from its 0e + 1e + 2e coefficients, the irreps of
1o x 1o (``molsym.o3.cartesian``: scalar Id + skew(axial vector) + symmetric traceless):

* the model's final features, canonical 0e + 1o + 1e + 2e (``Representation.features``), go
  through two equivariant linear maps: a_i (the atom's own role) and b_j (the neighbour's);
* for a directed pair (i, j) with r_ij = pos[j] - pos[i] + shift, a message
  m_ij = Linear(TP(b_j, Y(r̂_ij)) with weights from an MLP of the radial basis of |r_ij| times
  a smooth cutoff envelope, zero with vanishing first and second derivatives at the head's
  cutoff), and the block B_ij from the tensor product of a_i and m_ij onto 0e + 1e + 2e;
* symmetry by construction: H_ij = (B_ij + B_ji^T) / 2 and H_ji = H_ij^T, so H = H^T exactly;
  the diagonal blocks H_ii come from a_i and the sum of its messages onto 0e + 2e only
  (symmetric).

Equivariance is exact: H(Rx) = R H(x) R^T blockwise for proper and improper R (the blocks are
true tensors: their antisymmetric parts are axial, 1e). Permutations of the atoms permute the
blocks.

``sum_rule=True`` imposes the translational sum rule exactly: sum_j H_ij = 0 for every atom i
(the diagonal block is minus the sum of the atom's pair blocks). A symmetric H with zero block
row sums needs the antisymmetric parts of each atom's pair blocks to add up to zero; the head
meets that by making the pair blocks symmetric (0e + 2e), so they drop their 1e part.

The head reads pairs from the model's neighbour list (its cutoff is at most the model's)
and needs the full (symmetric) list that ``molsym.from_ase`` builds. Structures of a batch give
a block-diagonal (3N, 3N) matrix, like the exact Hessian of ``molsym.models.derivatives``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from e3nn import o3
from torch import nn

from molsym.heads.representation import Representation
from molsym.nn.radial import BesselBasis, PolynomialCutoff
from molsym.nn.scatter import scatter_sum
from molsym.o3.bilinear import fully_connected
from molsym.o3.cartesian import from_irreps


@dataclass(frozen=True)
class HessianHeadSettings:
    """Keys of ``{"heads": {"hessian": {...}}}`` in a model config.

    cutoff: Å, pairs closer than this get a block (at most the model's cutoff; None: the
        model's cutoff). channels: width of the head's hidden 0e + 1o + 1e + 2e features.
    num_radial, radial_hidden: radial basis size and hidden width of the radial MLP.
    avg_num_neighbors: divides the sum of messages of the diagonal blocks.
    sum_rule: impose sum_j H_ij = 0 exactly (symmetric pair blocks; see the module docstring).
    """

    cutoff: float | None = None
    channels: int = 16
    num_radial: int = 8
    radial_hidden: int = 32
    avg_num_neighbors: float = 10.0
    sum_rule: bool = False

    def __post_init__(self):
        for key in ("channels", "num_radial", "radial_hidden"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key!r} must be a positive integer, got {value!r}")
        for key in ("cutoff", "avg_num_neighbors"):
            value = getattr(self, key)
            if key == "cutoff" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{key!r} must be a positive number, got {value!r}")
        if not isinstance(self.sum_rule, bool):
            raise ValueError(f"'sum_rule' must be true or false, got {self.sum_rule!r}")

    def resolved(self, model_cutoff: float) -> "HessianHeadSettings":
        """The settings with the cutoff filled in (the model's when None) and checked against it."""
        cutoff = float(model_cutoff if self.cutoff is None else self.cutoff)
        if cutoff > model_cutoff:
            raise ValueError(f"'cutoff' {cutoff} exceeds the model's cutoff {model_cutoff}: the head reads its "
                             "pairs from the model's neighbour list; raise the model's cutoff or lower the head's")
        return HessianHeadSettings(cutoff, self.channels, self.num_radial, self.radial_hidden,
                                   float(self.avg_num_neighbors), self.sum_rule)


class HessianBlocks(NamedTuple):
    """A Hessian in blocks (eV/Å²): diagonal (N, 3, 3), pair_index (2, P) int64 (i, j) and
    pair (P, 3, 3) = H_ij (H_ji = H_ij^T is implied). Periodic images of the same pair add up."""

    diagonal: torch.Tensor
    pair_index: torch.Tensor
    pair: torch.Tensor

    def dense(self) -> torch.Tensor:
        """(3N, 3N), index 3 * atom + axis."""
        n = self.diagonal.shape[0]
        i, j = self.pair_index
        nodes = torch.arange(n, device=i.device)
        flat = torch.cat((i * n + j, j * n + i, nodes * (n + 1)))
        values = torch.cat((self.pair, self.pair.transpose(-1, -2), self.diagonal))
        return scatter_sum(values, flat, n * n).view(n, n, 3, 3).transpose(1, 2).reshape(3 * n, 3 * n)


def canonical_irreps(channels: int) -> o3.Irreps:
    """e3nn irreps of the canonical form: C x (0e + 1o + 1e + 2e)."""
    return o3.Irreps(f"{channels}x0e+{channels}x1o+{channels}x1e+{channels}x2e")


def canonical_to_e3nn(features: torch.Tensor) -> torch.Tensor:
    """Canonical (N, 12, C) -> e3nn's flat channel-major layout (N, 12 C) of :func:`canonical_irreps`."""
    n = features.shape[0]
    blocks = (features[:, 0:1], features[:, 1:4], features[:, 4:7], features[:, 7:12])
    return torch.cat([b.transpose(1, 2).reshape(n, -1) for b in blocks], dim=1)


def _block_from_coefficients(coefficients: torch.Tensor, axial: bool) -> torch.Tensor:
    """0e + 1e + 2e (..., 9) (or 0e + 2e (..., 6) when not ``axial``) -> 3x3 blocks (..., 3, 3)."""
    if not axial:
        zeros = coefficients.new_zeros(coefficients.shape[:-1] + (3,))
        coefficients = torch.cat((coefficients[..., :1], zeros, coefficients[..., 1:]), dim=-1)
    return from_irreps(coefficients)


class HessianHead(nn.Module):
    """HIP head: :class:`Representation` -> Hessian (3N, 3N) eV/Å² (:meth:`blocks` for 3x3 blocks)."""

    Settings = HessianHeadSettings

    def __init__(self, settings: HessianHeadSettings, feature_channels: int):
        super().__init__()
        if settings.cutoff is None:
            raise ValueError("HessianHead needs resolved settings (HessianHeadSettings.resolved)")
        self.settings = settings
        hidden = canonical_irreps(settings.channels)
        features = canonical_irreps(feature_channels)
        self.irreps_sh = o3.Irreps.spherical_harmonics(2)
        self.own = o3.Linear(features, hidden)
        self.neighbour = o3.Linear(features, hidden)
        instructions, irreps_mid = [], []
        for i1, (mul, ir1) in enumerate(hidden):
            for i2, (_, ir2) in enumerate(self.irreps_sh):
                for ir3 in ir1 * ir2:
                    if ir3 in hidden:
                        instructions.append((i1, i2, len(irreps_mid), "uvu", True))
                        irreps_mid.append((mul, ir3))
        irreps_mid = o3.Irreps(irreps_mid)
        self.edge_product = o3.TensorProduct(hidden, self.irreps_sh, irreps_mid, instructions,
                                             shared_weights=False, internal_weights=False)
        self.message = o3.Linear(irreps_mid, hidden)
        self.radial_basis = BesselBasis(settings.cutoff, settings.num_radial)
        self.envelope = PolynomialCutoff(settings.cutoff)
        self.radial_mlp = nn.Sequential(nn.Linear(settings.num_radial, settings.radial_hidden), nn.SiLU(),
                                        nn.Linear(settings.radial_hidden, self.edge_product.weight_numel))
        self.pair_product = o3.FullyConnectedTensorProduct(hidden, hidden, "0e+2e" if settings.sum_rule else "0e+1e+2e")
        self.self_product = None if settings.sum_rule else o3.FullyConnectedTensorProduct(hidden, hidden, "0e+2e")
        self.inv_avg_neighbors = 1.0 / math.sqrt(settings.avg_num_neighbors)

    def blocks(self, representation: Representation) -> HessianBlocks:
        """The Hessian's 3x3 blocks (eV/Å²) of the graph (or batch) of ``representation``."""
        geometry = representation.geometry
        if not geometry.symmetric:
            raise ValueError("the Hessian head needs a full neighbour list (every edge with its reverse), as "
                             "molsym.from_ase builds; this graph's edge list is not symmetric")
        x = canonical_to_e3nn(representation.features)
        n = x.shape[0]
        own, neighbour = self.own(x), self.neighbour(x)
        lengths = geometry.pair_lengths  # (P,)
        pairs = lengths.shape[0]
        radial = self.radial_mlp(self.radial_basis(lengths)) * self.envelope(lengths).unsqueeze(-1)
        i, j = geometry.directed_index  # (2, 2P): the pair rows (i, j), then their reverses (j, i)
        sh = o3.spherical_harmonics(self.irreps_sh, geometry.directed(geometry.pair_unit, odd=True),
                                    normalize=False, normalization="component")
        messages = self.message(self.edge_product(neighbour.index_select(0, j), sh, geometry.directed(radial)))
        # the blocks are linear in the messages, so they carry the envelope: zero beyond the cutoff
        directed = _block_from_coefficients(fully_connected(self.pair_product, own.index_select(0, i), messages),
                                            axial=not self.settings.sum_rule)
        pair = 0.5 * (directed[:pairs] + directed[pairs:].transpose(-1, -2))  # H_ij = (B_ij + B_ji^T) / 2
        pi, pj = geometry.pair_index
        if self.settings.sum_rule:  # H_ii = -sum_j H_ij over the row's pair blocks (symmetric here)
            diagonal = -(scatter_sum(pair, pi, n) + scatter_sum(pair.transpose(-1, -2), pj, n))
        else:
            gathered = scatter_sum(messages, i, n) * self.inv_avg_neighbors
            diagonal = _block_from_coefficients(fully_connected(self.self_product, own, own + gathered), axial=False)
        return HessianBlocks(diagonal, geometry.pair_index, pair)

    def forward(self, representation: Representation) -> torch.Tensor:
        """(3N, 3N) eV/Å², index 3 * atom + axis; block-diagonal over the structures of a batch."""
        return self.blocks(representation).dense()

    def extra_repr(self) -> str:
        s = self.settings
        return f"cutoff={s.cutoff}, channels={s.channels}, sum_rule={s.sum_rule}"
