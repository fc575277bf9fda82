"""Feature forms of node features, and every conversion between them (the only place that converts).

Two forms (:class:`FeatureForm`):

* ``cartesian``: C channels of rank-2 tensors held by their 9 coefficients in the
  orthonormal 0e + 1o + 2e basis of ``molsym.o3.cartesian``, component-major, shape
  (9, N, C) (TensorNet's form: the antisymmetric part is built from skew(r̂) of a polar
  vector, so it is 1o);
* ``spherical``: spherical-harmonic coefficients up to ``lmax`` in one or two parity
  classes, shape (N, S, (lmax+1)^2, C), S = ``parities``. Class s = 0 holds, at degree
  l, the irrep of parity (-1)^l (0e, 1o, 2e, 3o, ...: what Y_l(r̂) carries); class s = 1
  the other parity (0o, 1e, 2o, 3e, ...: pseudotensors, e.g. cross products). Within a
  class, component l^2 + m (m = 0..2l) is e3nn's order of degree l. A product of classes
  s1, s2 along a path (l1, l2, l3) lands in class (s1 + s2 + l1 + l2 + l3) mod 2.

Conversions (:class:`FormConverter`), from the row's form to the column's:

=======================  ==================================  ====================================
from \\ to                cartesian (C)                       spherical (L, S, C)
=======================  ==================================  ====================================
cartesian (C')           identity                            exact: 0e, 1o, 2e placed at class 0,
                                                             l <= 2, zeros elsewhere; needs
                                                             L >= 2 (else error: 2e would be lost)
spherical (L', S', C')   exact when L' <= 2 and S' = 1       exact zero padding when L' <= L and
                         (zeros for degrees above L');       S' <= S; otherwise error (degrees or
                         otherwise error (l > 2 or 0o, 1e,   parities would be lost)
                         2o would be lost)
=======================  ==================================  ====================================

When the channel counts differ (C' != C), a learned equivariant linear map mixes the
channels of each irrep separately (:class:`ChannelMap`, in the source form), then the
exact map above applies. Nothing is ever dropped silently: a conversion that would lose
degrees or parities raises :class:`FormError`, naming the layer.

:func:`canonical_features` reads any form as 0e + 1o + 1e + 2e up to l = 2 (N, 12, C), the
representation heads read (a documented projection, not a layer conversion).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

CARTESIAN = "cartesian"
SPHERICAL = "spherical"


class FormError(ValueError):
    """Two consecutive layers' feature forms cannot be converted without losing information."""


@dataclass(frozen=True)
class FeatureForm:
    """What a node-feature tensor holds: kind, channels, degrees and parity classes.

    ``cartesian``: lmax = 2 and parities = 1 always (0e + 1o + 2e, (9, N, C)).
    ``spherical``: degrees 0..lmax, ``parities`` 1 (class s = 0 only) or 2, (N, S, (L+1)^2, C).
    """

    kind: str
    channels: int
    lmax: int = 2
    parities: int = 1

    def __post_init__(self):
        if self.kind not in (CARTESIAN, SPHERICAL):
            raise ValueError(f"unknown feature form {self.kind!r}; expected {CARTESIAN!r} or {SPHERICAL!r}")
        if self.kind == CARTESIAN and (self.lmax, self.parities) != (2, 1):
            raise ValueError("the cartesian form holds 0e + 1o + 2e: lmax 2, one parity class")
        if self.parities not in (1, 2):
            raise ValueError(f"parities must be 1 or 2, got {self.parities!r}")
        if self.lmax < 0 or self.channels < 1:
            raise ValueError(f"invalid feature form {self}")

    @classmethod
    def cartesian(cls, channels: int) -> "FeatureForm":
        return cls(CARTESIAN, channels)

    @classmethod
    def spherical(cls, channels: int, lmax: int, parities: int = 1) -> "FeatureForm":
        return cls(SPHERICAL, channels, lmax, parities)

    def irreps(self) -> list[tuple[int, int, int]]:
        """(class s, degree l, parity p) of every block, in the tensor's order."""
        return [(s, l, (-1) ** (l + s)) for s in range(self.parities) for l in range(self.lmax + 1)]

    def describe(self) -> str:
        """e.g. '16x(0e+1o+2e) cartesian' or '8x(0e+1o+2e+0o+1e+2o) spherical'."""
        names = "+".join(f"{l}{'e' if p > 0 else 'o'}" for _, l, p in self.irreps())
        return f"{self.channels}x({names}) {self.kind}"


def _holds(source: FeatureForm, target: FeatureForm) -> bool:
    """Whether every irrep of ``source`` has a place in ``target`` (channels aside)."""
    if target.kind == SPHERICAL:
        return source.lmax <= target.lmax and source.parities <= target.parities
    return source.lmax <= 2 and source.parities == 1  # cartesian holds class 0 up to l = 2


def place(x: torch.Tensor, source: FeatureForm, target: FeatureForm) -> torch.Tensor:
    """The exact map of the table (same channels): ``source`` features into ``target``'s form.

    Raises :class:`FormError` when ``target`` has no place for some irrep of ``source``.
    """
    if source.channels != target.channels:
        raise FormError(f"place() keeps the channels: {source.describe()} -> {target.describe()}")
    if source == target:
        return x
    if not _holds(source, target):
        raise FormError(f"{source.describe()} does not fit into {target.describe()}")
    if source.kind == CARTESIAN:  # (9, N, C) -> (N, 1, 9, C), then padded
        return _pad(x.permute(1, 0, 2).unsqueeze(1).contiguous(), target)
    if target.kind == CARTESIAN:  # (N, 1, D <= 9, C) -> (9, N, C)
        coefficients = x[:, 0].transpose(0, 1)
        missing = 9 - coefficients.shape[0]
        if missing:
            coefficients = torch.cat((coefficients, coefficients.new_zeros(missing, *coefficients.shape[1:])))
        return coefficients.contiguous()
    return _pad(x, target)


def residual(x: torch.Tensor, source: FeatureForm, target: FeatureForm) -> torch.Tensor | None:
    """A layer's identity term: ``x`` itself when the forms agree, placed exactly in ``target``'s
    form when every irrep of ``source`` fits there with the same channels, else None."""
    if source == target:
        return x
    if source.channels != target.channels or not _holds(source, target):
        return None
    return place(x, source, target)


def _pad(x: torch.Tensor, target: FeatureForm) -> torch.Tensor:
    """Zero-pad spherical (N, S', D', C) to ``target``'s (N, S, D, C), S' <= S, D' <= D."""
    n, s, d, c = x.shape
    dim = (target.lmax + 1) ** 2
    if d < dim:
        x = torch.cat((x, x.new_zeros(n, s, dim - d, c)), dim=2)
    if s < target.parities:
        x = torch.cat((x, torch.zeros_like(x)), dim=1)
    return x


def _degree_of_component(lmax: int) -> torch.Tensor:
    """(D,) int64: degree l of each spherical component l^2 + m."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


class ChannelMap(nn.Module):
    """Learned equivariant linear map between two forms of one kind, one matrix per irrep block
    (no bias): C_in -> C_out channels of every block that both forms hold; blocks only the
    target holds are zero.

    ``weight``: cartesian (3, C_in, C_out), one per part 0e, 1o, 2e; spherical
    (S, L+1, C_in, C_out) over the classes S and degrees 0..L common to both forms.
    """

    def __init__(self, source: FeatureForm, target: FeatureForm | int):
        super().__init__()
        if isinstance(target, int):
            target = FeatureForm(source.kind, target, source.lmax, source.parities)
        if source.kind != target.kind:
            raise FormError(f"a channel map keeps the form: {source.describe()} -> {target.describe()}")
        self.source, self.target = source, target
        c_in = source.channels
        if source.kind == CARTESIAN:
            blocks = (3,)
            self.register_buffer("block_of_component", torch.tensor((0, 1, 1, 1, 2, 2, 2, 2, 2)), persistent=False)
        else:
            self.parities, self.lmax = min(source.parities, target.parities), min(source.lmax, target.lmax)
            blocks = (self.parities, self.lmax + 1)
            self.register_buffer("block_of_component", _degree_of_component(self.lmax), persistent=False)
        self.weight = nn.Parameter(torch.randn(*blocks, c_in, target.channels) / math.sqrt(c_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """cartesian (9, N, C_in) -> (9, N, C_out); spherical (N, S', D', C_in) -> (N, S, D, C_out)."""
        if self.source.kind == CARTESIAN:
            return torch.bmm(x, self.weight.index_select(0, self.block_of_component))
        weight = self.weight.index_select(1, self.block_of_component)  # (S, D, C_in, C_out)
        common = x[:, :self.parities, :(self.lmax + 1) ** 2]
        return _pad(torch.einsum("nsdc,sdco->nsdo", common, weight), self.target)


class FormConverter(nn.Module):
    """Features of ``source`` form -> ``target`` form, as the module table says.

    Parameter-free when the channels agree (exact map, or the identity); otherwise holds a
    :class:`ChannelMap`. Raises :class:`FormError` at construction when information would
    be lost; ``where`` (e.g. "layer 2 (tensornet)") names the layer in the message.
    """

    def __init__(self, source: FeatureForm, target: FeatureForm, where: str = ""):
        super().__init__()
        check_conversion(source, target, where)
        self.source, self.target = source, target
        self.channel_map = ChannelMap(source, target.channels) if source.channels != target.channels else None
        self._mapped = FeatureForm(source.kind, target.channels, source.lmax, source.parities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_map is not None:
            x = self.channel_map(x)
        return place(x, self._mapped, self.target)

    def extra_repr(self) -> str:
        return f"{self.source.describe()} -> {self.target.describe()}"


def check_conversion(source: FeatureForm, target: FeatureForm, where: str = "") -> None:
    """Raise :class:`FormError` unless ``source`` converts to ``target`` without loss."""
    if not _holds(source, target):
        raise FormError(
            f"{where + ': ' if where else ''}takes {target.describe()} features, but the layer before it "
            f"produces {source.describe()}; {_lost_irreps(source, target)} would be lost. Give the layers "
            "matching degrees (lmax) and parities, or put a layer that consumes them (e.g. e3nn) in between"
        )


def _lost_irreps(source: FeatureForm, target: FeatureForm) -> str:
    kept = {(l, p) for _, l, p in target.irreps()}
    lost = [f"{l}{'e' if p > 0 else 'o'}" for _, l, p in source.irreps() if (l, p) not in kept]
    return "+".join(lost) if lost else "nothing"


def canonical_features(x: torch.Tensor, form: FeatureForm) -> torch.Tensor:
    """Features of any form as 0e + 1o + 1e + 2e up to l = 2: (N, 12, C), blocks [0:1], [1:4],
    [4:7], [7:12] in e3nn's component order. Irreps the form lacks are zero (the cartesian form
    has no 1e); l > 2, 0o and 2o are not read (a projection for heads, not a layer conversion)."""
    if form.kind == CARTESIAN:
        c = x.permute(1, 0, 2)  # (N, 9, C)
        return torch.cat((c[:, :4], torch.zeros_like(c[:, 1:4]), c[:, 4:9]), dim=1)
    n, _, _, channels = x.shape
    even = _pad(x[:, :1, :min(9, x.shape[2])], FeatureForm.spherical(channels, 2))[:, 0]  # 0e, 1o, 2e
    axial = x[:, 1, 1:4] if form.parities == 2 and form.lmax >= 1 else x.new_zeros(n, 3, channels)
    return torch.cat((even[:, :4], axial, even[:, 4:9]), dim=1)
