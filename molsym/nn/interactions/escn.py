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


class SO2Layout:
    """The edge frame's bookkeeping for degrees 0..lmax_in -> 0..lmax_out, orders <= mmax.

    ``orders[m]`` = (n_in, n_out), the numbers of input and output degrees l >= m, for
    m = 0..top, top = min(mmax, lmax_in, lmax_out). Frame coefficients are held order-major:
    order 0 for l = m..lmax, then for each m >= 1 the pairs (+m, -m) for l = m..lmax, so the
    coefficients of order ±m of all degrees are one contiguous run of (n, 2).
    """

    def __init__(self, lmax_in: int, lmax_out: int, mmax: int):
        self.lmax_in, self.lmax_out, self.mmax = lmax_in, lmax_out, mmax
        self.orders = [(lmax_in - m + 1, lmax_out - m + 1) for m in range(min(mmax, lmax_in, lmax_out) + 1)]
        self.top = len(self.orders) - 1

    def weight_shapes(self, parities_in: int, channels: int) -> list[tuple[int, ...]]:
        """Per-edge shapes of A_0, A_1, B_1, A_2, B_2, ...: (S_in, C, n_out, n_in) each."""
        shapes = []
        for m, (n_in, n_out) in enumerate(self.orders):
            shapes += [(parities_in, channels, n_out, n_in)] * (1 if m == 0 else 2)
        return shapes


def frame_rows(lmax: int, top: int) -> list[tuple[int, int]]:
    """(l, order) of each kept frame coefficient, order-major (see :class:`SO2Layout`)."""
    rows = [(l, 0) for l in range(lmax + 1)]
    for m in range(1, top + 1):
        rows += [(l, sign * m) for l in range(m, lmax + 1) for sign in (1, -1)]
    return rows


def so2_frame_rotation(blocks: list[torch.Tensor], lmax: int, top: int) -> torch.Tensor:
    """The Wigner-D rows of the kept frame coefficients as one matrix per edge.

    blocks: D^l (D, 2l+1, 2l+1) for l = 0..(>= lmax). Returns (D, K, (lmax+1)^2), block-diagonal
    in the degrees, its rows the orders |m| <= top of every degree in the order of
    :func:`frame_rows`, so one batched matmul rotates all degrees into the frame and reorders
    them order-major (its transpose rotates back).
    """
    size = (lmax + 1) ** 2
    padded, start, index = [], {}, []
    for l in range(lmax + 1):
        k = min(l, top)
        start[l] = sum(2 * min(d, top) + 1 for d in range(l))
        block = blocks[l][:, l - k:l + k + 1]
        padded.append(torch.nn.functional.pad(block, (l * l, size - (l + 1) ** 2)))
    for l, m in frame_rows(lmax, top):
        index.append(start[l] + min(l, top) + m)
    by_degree = torch.cat(padded, dim=1)
    return by_degree.index_select(1, torch.tensor(index, dtype=torch.long, device=by_degree.device))


def frame_rotation(geometry: EdgeGeometry, lmax: int, top: int) -> torch.Tensor:
    """:func:`so2_frame_rotation` of ``geometry.directed_wigner``, computed once per geometry."""
    key = f"so2_frame_rotation_{lmax}_{top}"
    rotation = geometry._cache.get(key)
    if rotation is None:
        rotation = so2_frame_rotation(geometry.directed_wigner(max(lmax, geometry.frame_lmax)), lmax, top)
        geometry._cache[key] = rotation
    return rotation


def rotate_into_frames(h: torch.Tensor, geometry: EdgeGeometry, layout: SO2Layout) -> torch.Tensor:
    """Senders' features h (N, S, (L_in+1)^2, C) in the directed edges' frames: (D, S, C, K_in)."""
    n, parities, size, c = h.shape
    sender = h.transpose(2, 3).reshape(n, parities * c, size).index_select(0, geometry.directed_index[1])
    frame = torch.bmm(sender, frame_rotation(geometry, layout.lmax_in, layout.top).transpose(1, 2))
    return frame.view(sender.shape[0], parities, c, frame.shape[-1])


def rotate_back_and_sum(frame: torch.Tensor, geometry: EdgeGeometry, layout: SO2Layout, num_nodes: int,
                        inv_avg_neighbors: float) -> torch.Tensor:
    """Messages (D, S, C, K_out) in the edge frames, rotated back and summed onto receivers:
    (N, S, (L_out+1)^2, C), divided by avg_num_neighbors."""
    edges, parities, c, rows = frame.shape
    rotation = frame_rotation(geometry, layout.lmax_out, layout.top)  # (D, K_out, (L_out+1)^2)
    size = rotation.shape[-1]
    messages = torch.bmm(frame.reshape(edges, parities * c, rows), rotation)
    aggregated = scatter_sum(messages.view(edges, parities * c * size), geometry.directed_index[0], num_nodes)
    return (aggregated * inv_avg_neighbors).view(num_nodes, parities, c, size).transpose(2, 3)


def order_slices(layout: SO2Layout, n_of) -> list[slice]:
    """The frame columns of each order m: n_of(m) for m = 0, 2 n_of(m) pairs after."""
    slices, start = [], 0
    for m in range(len(layout.orders)):
        width = n_of(m) * (1 if m == 0 else 2)
        slices.append(slice(start, start + width))
        start += width
    return slices


def so2_convolution(h: torch.Tensor, weights: list[torch.Tensor], geometry: EdgeGeometry, layout: SO2Layout,
                    parities_out: int, inv_avg_neighbors: float) -> torch.Tensor:
    """Messages summed onto receivers: h (N, S_in, (L_in+1)^2, C) -> (N, S_out, (L_out+1)^2, C).

    ``weights``: [A_0, A_1, B_1, A_2, B_2, ...] per directed edge (order of
    ``geometry.directed_index``), A_m and B_m of shape (D, S_in, C, n_out(m), n_in(m)).
    One batched matmul rotates all degrees in (order-major), one per order m applies A_m and
    one B_m to the (+m, -m) pair as two columns, one rotates back.
    """
    n, parities_in, _, c = h.shape
    frame = rotate_into_frames(h, geometry, layout)  # (D, S_in, C, K_in)
    edges = frame.shape[0]
    columns = order_slices(layout, lambda m: layout.orders[m][0])
    out = []
    for m, (n_in, n_out) in enumerate(layout.orders):
        x = frame[..., columns[m]].reshape(edges, parities_in, c, n_in, 1 if m == 0 else 2)  # x+ (, x-)
        y = (weights[0] if m == 0 else weights[2 * m - 1]) @ x  # A x+ (, A x-): (D, S_in, C, n_out, .)
        if m > 0:
            bx = weights[2 * m] @ x  # B x+, B x-
            # y+ = A x+ + B x-, y- = A x- - B x+, with B taking class s to 1 - s
            switched = torch.stack((bx[..., 1], -bx[..., 0]), dim=-1)
            y = y + switched.flip(1) if parities_in == 2 else torch.cat((y, switched), dim=1)
        elif parities_in < parities_out:
            y = torch.cat((y, torch.zeros_like(y)), dim=1)
        out.append(y.reshape(edges, parities_out, c, n_out * (1 if m == 0 else 2)))
    return rotate_back_and_sum(torch.cat(out, dim=-1), geometry, layout, n, inv_avg_neighbors)


def so2_convolution_shared(h: torch.Tensor, scales: list[torch.Tensor], matrices: list[torch.Tensor],
                           geometry: EdgeGeometry, layout: SO2Layout, parities_out: int,
                           inv_avg_neighbors: float) -> torch.Tensor:
    """The SO(2) convolution with shared mixing: h (N, S_in, (L_in+1)^2, C) -> (N, S_out, (L_out+1)^2, C).

    Per order m the frame coefficients are scaled per edge by ``scales[m]`` (D, S_in, C, n_in(m))
    (from the radial network; the same for +m and -m), then mixed over (class, channel, degree)
    jointly by one GEMM with the learnt matrix ``matrices[m]``:
    m = 0: (S_in, C n_out, C n_in), one block per class (class-keeping);
    m >= 1: (S_out C n_out, S_in C n_in) = [[A_0, B_1], [-B_0, A_1]] (S_in = 2) or [[A_0], [-B_0]]
    (S_in = 1), applied to the rows (x+[0], x-[1]) and (x-[0], -x+[1]) of every edge, which
    gives (y+[0], y-[1]) and (y-[0], -y+[1]) with y+ = A x+ + B x-, y- = A x- - B x+ (B switching
    the class). With channel-diagonal matrices this is the channel-wise convolution with
    A_m[s, c] scaled column-wise by ``scales[m][:, s, c]`` (:func:`shared_matrices`).
    """
    n, parities_in, _, c = h.shape
    frame = rotate_into_frames(h, geometry, layout)  # (D, S_in, C, K_in)
    edges = frame.shape[0]
    columns = order_slices(layout, lambda m: layout.orders[m][0])
    out = []
    for m, (n_in, n_out) in enumerate(layout.orders):
        x = frame[..., columns[m]].reshape(edges, parities_in, c, n_in, 1 if m == 0 else 2)
        x = x * scales[m].unsqueeze(-1)
        if m == 0:
            rows = x.reshape(edges, parities_in, c * n_in).transpose(0, 1)  # (S_in, D, C n_in)
            y = torch.bmm(rows, matrices[0].transpose(1, 2)).transpose(0, 1).reshape(edges, parities_in, c, n_out)
            if parities_in < parities_out:
                y = torch.cat((y, torch.zeros_like(y)), dim=1)
            out.append(y)
            continue
        plus, minus = x.unbind(-1)  # (D, S_in, C, n_in) each
        if parities_in == 2:
            first = torch.stack((plus[:, 0], minus[:, 1]), dim=1)
            second = torch.stack((minus[:, 0], -plus[:, 1]), dim=1)
        else:
            first, second = plus, minus
        rows = torch.stack((first, second), dim=1).reshape(2 * edges, parities_in * c * n_in)
        mixed = torch.nn.functional.linear(rows, matrices[m]).view(edges, 2, 2, c, n_out)
        # mixed[:, 0] = (y+[0], y-[1]), mixed[:, 1] = (y-[0], -y+[1])
        y_plus = torch.stack((mixed[:, 0, 0], -mixed[:, 1, 1]), dim=1)
        y_minus = torch.stack((mixed[:, 1, 0], mixed[:, 0, 1]), dim=1)
        out.append(torch.stack((y_plus, y_minus), dim=-1).reshape(edges, 2, c, 2 * n_out))
    return rotate_back_and_sum(torch.cat(out, dim=-1), geometry, layout, n, inv_avg_neighbors)


def shared_matrices(blocks: list[torch.Tensor], layout: SO2Layout) -> list[torch.Tensor]:
    """The shared-mixing matrices equal to edge-independent channel-wise blocks.

    blocks: [A_0, A_1, B_1, ...], each (S_in, C, n_out, n_in). Returns the channel-diagonal
    matrices of :func:`so2_convolution_shared` (shapes there), so that with scales of ones
    the two convolutions agree (and with scales s, A and B multiplied column-wise by s).
    """
    parities, c = blocks[0].shape[:2]
    eye = torch.eye(c, dtype=blocks[0].dtype, device=blocks[0].device)

    def diagonal(block):  # (C, n_out, n_in) -> (C n_out, C n_in)
        return torch.einsum("cd,coi->codi", eye, block).reshape(c * block.shape[1], c * block.shape[2])

    matrices = [torch.stack([diagonal(blocks[0][s]) for s in range(parities)])]
    for m in range(1, len(layout.orders)):
        a, b = blocks[2 * m - 1], blocks[2 * m]
        if parities == 2:
            rows = [[diagonal(a[0]), diagonal(b[1])], [-diagonal(b[0]), diagonal(a[1])]]
        else:
            rows = [[diagonal(a[0])], [-diagonal(b[0])]]
        matrices.append(torch.cat([torch.cat(row, dim=1) for row in rows], dim=0))
    return matrices


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
        self.mixing = settings.mixing
        if self.mixing == "shared":
            s_in, s_out = input_form.parities, self.output_form.parities
            self.weight_shapes = [(s_in, c, n_in) for n_in, _ in self.layout.orders]
            shapes = [(s_in, c * n_out, c * n_in) if m == 0 else (s_out * c * n_out, s_in * c * n_in)
                      for m, (n_in, n_out) in enumerate(self.layout.orders)]
            fan_in = [s_in * c * n_in if m else c * n_in for m, (n_in, _) in enumerate(self.layout.orders)]
            self.so2_matrices = nn.ParameterList(
                [nn.Parameter(torch.randn(shape) / math.sqrt(f)) for shape, f in zip(shapes, fan_in)])
        else:
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
        """Per directed edge: channelwise, [A_0, A_1, B_1, ...], each (D, S_in, C, n_out, n_in);
        shared, the scales of each order, (D, S_in, C, n_in)."""
        pair = geometry.pair_weights(self.radial_mlp, self.num_radial)
        return [geometry.directed(w).reshape(w.shape[0] * (2 if geometry.symmetric else 1), *shape)
                for w, shape in zip(pair.split(self.weight_sizes, dim=1), self.weight_shapes)]

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
