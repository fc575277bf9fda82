"""eSCN (Passaro & Zitnick, ICML 2023): SO(3) convolutions reduced to SO(2), made O(3).

Node features: the spherical form of ``molsym.nn.forms`` in both parity classes,
(N, 2, (lmax+1)^2, C). For an edge j -> i, the sender's coefficients are rotated into the
edge frame, where r̂_ij lies along +y (``molsym.o3.rotation``, Wigner-D blocks from
``EdgeGeometry.directed_wigner``). There a tensor product with Y(r̂) is zero except on
the filter's m = 0, so the convolution becomes, for each m = 0..mmax, a linear map of the
coefficients of order ±m over all degrees l >= m::

    y_{l',+m} = sum_l A_m[l', l] x_{l,+m} + B_m[l', l] x_{l,-m}
    y_{l',-m} = sum_l A_m[l', l] x_{l,-m} - B_m[l', l] x_{l,+m}

per channel, with A_m, B_m from a radial network of |r_ij| (m = 0 has A only). A blocks come
from the paths with l + l2 + l' even and keep the parity class; B blocks from the odd paths
(e.g. the cross product) and switch it, so the features carry pseudotensors and the model
is O(3)-equivariant (eSCN as published is SO(3)). The message is rotated back and summed
over neighbours (divided by avg_num_neighbors). With mmax = lmax this equals the e3nn
convolution with every O(3) path and filter degree up to 2 lmax (tests/test_escn.py); with
mmax < lmax the coefficients of order |m| > mmax in the edge frame are dropped (eSCN's
truncation, exactly equivariant). Cost per edge and channel: O(lmax^2 mmax) for the
rotations and sum over m <= mmax of (lmax - m + 1)^2 for the mixing, O(L^3) at mmax = L,
against O(L^6) for the full tensor product.

The layer: h = Linear(x); m_i = SO2 convolution of h; x'_i = x_i + Gate(Linear(m_i)) +
SelfInteraction(x_i), with the gate of the e3nn family (silu on 0e, tanh on 0o, sigmoid
gates from 0e scalars on every l >= 1 block).

``mixing``: "channelwise" (default; the above, A_m and B_m per edge and channel from the
radial network) or "shared" (fairchem's parametrisation made O(3): per edge only a radial
scale of each input (degree, class, channel) and order, then per order one learnt matrix
mixing degrees, classes and channels jointly; fewer per-edge values, one GEMM per order).
Neither contains the other (shared mixes channels but its radial dependence is a
per-input scale; channel-wise has a free radial function per (l', l, channel)), so the
default stays channel-wise. The kernels are in ``molsym.nn.interactions.so2_conv``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from molsym.nn.forms import SPHERICAL, ChannelMap, FeatureForm, residual
from molsym.nn.geometry import EdgeGeometry
from molsym.nn.interactions.base import (
    Family, Interaction, RadialNetwork, check_non_negative_int, check_positive_float, check_positive_int,
)
from molsym.nn.interactions.e3nn_conv import E3nnEmbedding, E3nnInvariants, e3nn_embedding_form, e3nn_input_form
from molsym.nn.interactions.so2_conv import SO2Layout, channelwise_weights, so2_convolution, so2_convolution_shared


MIXINGS = ("channelwise", "shared")


@dataclass(frozen=True)
class ESCNSettings:
    """Keys of an eSCN layer: channels C, degrees 0..lmax, orders 0..mmax kept in the edge frame,
    the radial network (num_radial functions in, radial_hidden units), avg_num_neighbors and
    the SO(2) mixing: "channelwise" (per edge and channel, A_m and B_m from the radial network)
    or "shared" (per edge, a radial scaling of each (class, channel, degree), then one learnt
    matrix per order mixing them jointly; :func:`so2_convolution_shared`)."""

    channels: int = 128
    lmax: int = 4
    mmax: int = 2
    num_radial: int = 32
    radial_hidden: int = 64
    avg_num_neighbors: float = 16.0
    mixing: str = "channelwise"

    def __post_init__(self):
        check_positive_int("channels", self.channels)
        check_non_negative_int("lmax", self.lmax)
        check_non_negative_int("mmax", self.mmax)
        if self.mmax > self.lmax:
            raise ValueError(f"'mmax' must be <= 'lmax', got mmax {self.mmax} with lmax {self.lmax}")
        check_positive_int("num_radial", self.num_radial)
        check_positive_int("radial_hidden", self.radial_hidden)
        check_positive_float("avg_num_neighbors", self.avg_num_neighbors)
        if self.mixing not in MIXINGS:
            raise ValueError(f"'mixing' must be one of {', '.join(MIXINGS)}, got {self.mixing!r}")


def escn_output_form(settings: ESCNSettings, input_form: FeatureForm) -> FeatureForm:
    """C channels up to lmax, both parity classes as soon as a B block exists (some m >= 1)."""
    switches = min(settings.mmax, settings.lmax, input_form.lmax) >= 1
    parities = 2 if switches or input_form.parities == 2 else 1
    return FeatureForm.spherical(settings.channels, settings.lmax, parities)


class SpatialGate(nn.Module):
    """silu on 0e, tanh on 0o, and sigmoid gates (from 0e scalars of the messages) on l >= 1."""

    def __init__(self, form: FeatureForm):
        super().__init__()
        self.form = form
        c = form.channels
        self.gated = form.parities * form.lmax
        self.gates = nn.Linear(c, self.gated * c) if self.gated else None
        # gate of each component l^2 + m, l >= 1: index l - 1 of the gated degrees
        degree = [l - 1 for l in range(1, form.lmax + 1) for _ in range(2 * l + 1)]
        self.register_buffer("gate_of_component", torch.tensor(degree, dtype=torch.long), persistent=False)

    def forward(self, z: torch.Tensor, messages: torch.Tensor) -> torch.Tensor:
        """z (N, S, D, C) to gate; messages (N, S, D, C) whose 0e block drives the gates."""
        n, s, _, c = z.shape
        scalars = [torch.nn.functional.silu(z[:, 0, :1])] + ([torch.tanh(z[:, 1, :1])] if s == 2 else [])
        if not self.gated:
            return torch.stack(scalars, dim=1)
        gates = torch.sigmoid(self.gates(messages[:, 0, 0])).view(n, s, self.form.lmax, c)
        gated = z[:, :, 1:] * gates.index_select(2, self.gate_of_component)
        return torch.cat((torch.stack(scalars, dim=1), gated), dim=2)


def channelwise_output_order(layout: SO2Layout, parities_in: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and sign (K,) taking the radial outputs A_0, A_1, B_1, ... (flattened (S_in, C, n_out,
    n_in) blocks) to the flattened weights of ``so2_conv.so2_convolution``: out[k] = sign[k] in[index[k]]."""
    shapes = layout.weight_shapes(parities_in, channels)
    sizes = [math.prod(shape) for shape in shapes]
    labels = torch.arange(1, sum(sizes) + 1, dtype=torch.float64)  # 1-based, so that a sign shows
    blocks = [b.view(shape) for b, shape in zip(labels.split(sizes), shapes)]
    order = torch.cat([channels_last(w).reshape(-1) for w in channelwise_weights(blocks)])
    return order.abs().long() - 1, order.sign()


def channels_last(weights: torch.Tensor) -> torch.Tensor:
    """A channel-wise weight block, A_0 (..., S_in, C, n_out, n_in) or M_m (..., C, n_out, n_in), with
    its channel axis moved last: the order in which the radial network emits it."""
    return weights.movedim(-3, -1)


def channels_first(weights: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Rows of radial outputs (P, size) emitted in :func:`channels_last` order -> the block of
    ``shape`` (as :meth:`SO2Layout.mixing_shapes`), a view with the channels innermost in memory."""
    *outer, c, n_out, n_in = shape
    return weights.reshape(weights.shape[0], *outer, n_out, n_in, c).movedim(-1, -3)


class ReorderedOutputs(nn.Module):
    """A Linear-ending network whose outputs are permuted and sign-flipped, out[:, k] =
    sign[k] network(x)[:, index[k]], by reordering the last layer's rows (no copy of the outputs).
    The network's parameters stay owned (and named in state dicts) by the module that holds it."""

    def __init__(self, network: nn.Sequential, index: torch.Tensor, sign: torch.Tensor):
        super().__init__()
        self.__dict__["network"] = network  # not a submodule: no second copy of its state-dict keys
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("sign", sign, persistent=False)

    def _last(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The hidden layers' output and the reordered, signed last layer (weight, bias)."""
        *hidden, last = self.network
        for layer in hidden:
            x = layer(x)
        sign = self.sign.to(last.weight.dtype)
        weight = last.weight.index_select(0, self.index) * sign.unsqueeze(-1)
        return x, weight, last.bias.index_select(0, self.index) * sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias = self._last(x)
        return torch.nn.functional.linear(x, weight, bias)

    def scaled(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """forward(x) * scale[:, None], the scale folded into the last layer: one product of
        [scale h, scale] with [W, b] (no pass over the wide output, none in its backward)."""
        x, weight, bias = self._last(x)
        scale = scale.unsqueeze(-1)
        return torch.cat((x * scale, scale), dim=-1) @ torch.cat((weight, bias.unsqueeze(-1)), dim=-1).T


class ESCNConvolution(Interaction):
    """One eSCN layer (see the module docstring)."""

    def __init__(self, settings: ESCNSettings, input_form: FeatureForm):
        super().__init__()
        if input_form.kind != SPHERICAL:
            raise ValueError(f"an eSCN layer takes the spherical form, got {input_form.describe()}")
        c = settings.channels
        self.input_form = input_form
        self.output_form = escn_output_form(settings, input_form)
        self.num_radial = settings.num_radial
        self.inv_avg_neighbors = 1.0 / settings.avg_num_neighbors
        self.frame_lmax = max(input_form.lmax, settings.lmax)
        self.layout = SO2Layout(input_form.lmax, settings.lmax, settings.mmax)
        hidden_form = FeatureForm.spherical(c, input_form.lmax, input_form.parities)
        self.linear_in = ChannelMap(input_form, hidden_form)
        self.mixing = settings.mixing
        if self.mixing == "shared":
            self.weight_shapes = self.layout.scale_shapes(input_form.parities, c)
            shapes = self.layout.matrix_shapes(input_form.parities, self.output_form.parities, c)
            self.so2_matrices = nn.ParameterList(
                [nn.Parameter(torch.randn(shape) / math.sqrt(shape[-1])) for shape in shapes])
        else:
            self.weight_shapes = self.layout.mixing_shapes(input_form.parities, self.output_form.parities, c)
        self.weight_sizes = [math.prod(shape) for shape in self.weight_shapes]
        self.radial_mlp = nn.Sequential(
            nn.Linear(settings.num_radial, settings.radial_hidden), nn.SiLU(),
            nn.Linear(settings.radial_hidden, sum(self.weight_sizes)),
        )
        # channelwise: the parameters' outputs are A_0, A_1, B_1, ... (S_in, C, n_out, n_in) each;
        # the convolution reads them as A_0, M_1, M_2, ... (so2_conv.mixing_matrix), emitted with
        # the channels innermost (channels_last)
        self.radial_network = self.radial_mlp if self.mixing == "shared" else ReorderedOutputs(
            self.radial_mlp, *channelwise_output_order(self.layout, input_form.parities, c))
        self.linear_out = ChannelMap(self.output_form, self.output_form)
        self.gate = SpatialGate(self.output_form)
        self.self_interaction = ChannelMap(input_form, self.output_form)

    def radial_networks(self) -> list[RadialNetwork]:
        return [RadialNetwork(self.radial_network, self.num_radial)]

    def edge_weights(self, geometry: EdgeGeometry) -> list[torch.Tensor]:
        """Per pair row (shared by both directions): channelwise, A_0 (P, S_in, C, n_out, n_in) and
        M_m (P, C, S_out n_out, S_in n_in) for m >= 1; shared, the scales of each order, (P, n_in, S_in, C)."""
        pair = geometry.pair_weights(self.radial_network, self.num_radial)
        blocks = pair.split(self.weight_sizes, dim=1)
        if self.mixing == "shared":
            return [w.reshape(w.shape[0], *shape) for w, shape in zip(blocks, self.weight_shapes)]
        return [channels_first(w, shape) for w, shape in zip(blocks, self.weight_shapes)]

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """features (N, S_in, D_in, C_in) of ``input_form`` -> (N, S, D, C) of ``output_form``."""
        h = self.linear_in(features)
        if self.mixing == "shared":
            messages = so2_convolution_shared(h, self.edge_weights(geometry), list(self.so2_matrices), geometry,
                                              self.layout, self.output_form.parities, self.inv_avg_neighbors)
        else:
            messages = so2_convolution(h, self.edge_weights(geometry), geometry, self.layout,
                                       self.output_form.parities, self.inv_avg_neighbors)
        update = self.gate(self.linear_out(messages), messages) + self.self_interaction(features)
        skip = residual(features, self.input_form, self.output_form)
        return update if skip is None else skip + update


ESCN = Family(
    name="escn",
    settings=ESCNSettings,
    input_form=e3nn_input_form,
    output_form=escn_output_form,
    embedding_form=e3nn_embedding_form,
    embedding=E3nnEmbedding,
    interaction=ESCNConvolution,
    invariants=E3nnInvariants,
)
