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
from molsym.nn.scatter import scatter_sum


@dataclass(frozen=True)
class ESCNSettings:
    """Keys of an eSCN layer: channels C, degrees 0..lmax, orders 0..mmax kept in the edge frame,
    the radial network (num_radial functions in, radial_hidden units) and avg_num_neighbors."""

    channels: int = 128
    lmax: int = 4
    mmax: int = 2
    num_radial: int = 32
    radial_hidden: int = 64
    avg_num_neighbors: float = 16.0

    def __post_init__(self):
        check_positive_int("channels", self.channels)
        check_non_negative_int("lmax", self.lmax)
        check_non_negative_int("mmax", self.mmax)
        if self.mmax > self.lmax:
            raise ValueError(f"'mmax' must be <= 'lmax', got mmax {self.mmax} with lmax {self.lmax}")
        check_positive_int("num_radial", self.num_radial)
        check_positive_int("radial_hidden", self.radial_hidden)
        check_positive_float("avg_num_neighbors", self.avg_num_neighbors)


def escn_output_form(settings: ESCNSettings, input_form: FeatureForm) -> FeatureForm:
    """C channels up to lmax, both parity classes as soon as a B block exists (some m >= 1)."""
    switches = min(settings.mmax, settings.lmax, input_form.lmax) >= 1
    parities = 2 if switches or input_form.parities == 2 else 1
    return FeatureForm.spherical(settings.channels, settings.lmax, parities)


class SO2Layout:
    """The edge frame's bookkeeping for degrees 0..lmax_in -> 0..lmax_out, orders <= mmax.

    Frame coefficients of degree l are kept for m = -k..k, k = min(l, mmax) (``kept_in``,
    ``kept_out``); ``orders[m]`` = (n_in, n_out), the numbers of input and output degrees l >= m.
    """

    def __init__(self, lmax_in: int, lmax_out: int, mmax: int):
        self.lmax_in, self.lmax_out, self.mmax = lmax_in, lmax_out, mmax
        self.kept_in = [min(l, mmax) for l in range(lmax_in + 1)]
        self.kept_out = [min(l, mmax) for l in range(lmax_out + 1)]
        self.orders = [(lmax_in - m + 1, lmax_out - m + 1) for m in range(min(mmax, lmax_in, lmax_out) + 1)]

    def weight_shapes(self, parities_in: int, channels: int) -> list[tuple[int, ...]]:
        """Per-edge shapes of A_0, A_1, B_1, A_2, B_2, ...: (S_in, C, n_out, n_in) each."""
        shapes = []
        for m, (n_in, n_out) in enumerate(self.orders):
            shapes += [(parities_in, channels, n_out, n_in)] * (1 if m == 0 else 2)
        return shapes


def so2_convolution(h: torch.Tensor, weights: list[torch.Tensor], geometry: EdgeGeometry, layout: SO2Layout,
                    parities_out: int, inv_avg_neighbors: float) -> torch.Tensor:
    """Messages summed onto receivers: h (N, S_in, (L_in+1)^2, C) -> (N, S_out, (L_out+1)^2, C).

    ``weights``: [A_0, A_1, B_1, A_2, B_2, ...] per directed edge (order of
    ``geometry.directed_index``), A_m and B_m of shape (D, S_in, C, n_out(m), n_in(m)).
    Frame coefficients move as lists of (D, S, C) rows (stacked and unbound, never gathered
    by index), so the backward pass allocates nothing the size of the frame per order.
    """
    n, parities_in, _, c = h.shape
    i, j = geometry.directed_index
    blocks = geometry.directed_wigner(max(layout.lmax_in, layout.lmax_out))
    nodes = h.permute(0, 2, 1, 3).reshape(n, (layout.lmax_in + 1) ** 2, parities_in * c)  # (N, D_in, S_in C)
    sender = nodes.index_select(0, j)
    edges = sender.shape[0]
    rows = []  # rows[l][k + m]: (D, S_in, C), frame coefficient of degree l and order m
    for l, k in enumerate(layout.kept_in):
        rotated = blocks[l][:, l - k:l + k + 1] @ sender[:, l * l:(l + 1) ** 2]
        rows.append(rotated.view(edges, 2 * k + 1, parities_in, c).unbind(1))
    out_rows = [[None] * (2 * k + 1) for k in layout.kept_out]
    for m, (n_in, n_out) in enumerate(layout.orders):
        degrees_in = range(m, m + n_in)
        plus = torch.stack([rows[l][layout.kept_in[l] + m] for l in degrees_in], dim=-1)  # (D, S_in, C, n_in)
        a = weights[0] if m == 0 else weights[2 * m - 1]
        a_plus = (a * plus.unsqueeze(-2)).sum(-1)  # (D, S_in, C, n_out)
        if m == 0:
            y_plus, y_minus = _classes(a_plus, parities_out), None
        else:
            minus = torch.stack([rows[l][layout.kept_in[l] - m] for l in degrees_in], dim=-1)
            b = weights[2 * m]
            a_minus = (a * minus.unsqueeze(-2)).sum(-1)
            b_plus = (b * plus.unsqueeze(-2)).sum(-1)
            b_minus = (b * minus.unsqueeze(-2)).sum(-1)
            if parities_in == 2:
                y_plus, y_minus = a_plus + b_minus.flip(1), a_minus - b_plus.flip(1)
            else:
                y_plus, y_minus = torch.cat((a_plus, b_minus), dim=1), torch.cat((a_minus, -b_plus), dim=1)
        for index, l in enumerate(range(m, m + n_out)):
            k = layout.kept_out[l]
            out_rows[l][k + m] = y_plus[..., index]
            if y_minus is not None:
                out_rows[l][k - m] = y_minus[..., index]
    messages = torch.cat([
        blocks[l][:, l - k:l + k + 1].transpose(1, 2)
        @ torch.stack(out_rows[l], dim=1).reshape(edges, 2 * k + 1, parities_out * c)
        for l, k in enumerate(layout.kept_out)], dim=1)  # (D, D_out, S_out C)
    aggregated = scatter_sum(messages, i, n) * inv_avg_neighbors
    return aggregated.view(n, (layout.lmax_out + 1) ** 2, parities_out, c).permute(0, 2, 1, 3)


def _classes(x: torch.Tensor, parities: int) -> torch.Tensor:
    """(D, S, C, n) with S classes -> ``parities`` classes, zero-padded."""
    if x.shape[1] < parities:
        x = torch.cat((x, torch.zeros_like(x)), dim=1)
    return x


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
        self.weight_shapes = self.layout.weight_shapes(input_form.parities, c)
        self.weight_sizes = [math.prod(shape) for shape in self.weight_shapes]
        self.radial_mlp = nn.Sequential(
            nn.Linear(settings.num_radial, settings.radial_hidden), nn.SiLU(),
            nn.Linear(settings.radial_hidden, sum(self.weight_sizes)),
        )
        self.linear_out = ChannelMap(self.output_form, self.output_form)
        self.gate = SpatialGate(self.output_form)
        self.self_interaction = ChannelMap(input_form, self.output_form)

    def radial_networks(self) -> list[RadialNetwork]:
        return [RadialNetwork(self.radial_mlp, self.num_radial)]

    def edge_weights(self, geometry: EdgeGeometry) -> list[torch.Tensor]:
        """[A_0, A_1, B_1, ...] per directed edge, each (D, S_in, C, n_out, n_in)."""
        flat = geometry.directed(geometry.pair_weights(self.radial_mlp, self.num_radial))
        return [w.reshape(-1, *shape) for w, shape in zip(flat.split(self.weight_sizes, dim=1), self.weight_shapes)]

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, graph: dict) -> torch.Tensor:
        """features (N, S_in, D_in, C_in) of ``input_form`` -> (N, S, D, C) of ``output_form``."""
        h = self.linear_in(features)
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
