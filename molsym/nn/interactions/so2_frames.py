"""Edge frames of the SO(2) convolution: the layout of the frame coefficients, the Wigner-D
rows that rotate node features in and back, and the sum onto receivers.

Frame coefficients are kept order-major, one (D, K, C) frame per parity class and per group
of consecutive degrees (:func:`degree_groups`): order 0 for the group's degrees, then for each
m >= 1 the +m coefficients of its degrees l >= m followed by the -m ones. Class 1 is kept in
G-form (``molsym.nn.interactions.so2_conv``): its rows of order m >= 1 are (-m, then -(+m)),
P R for the plain rows R; P is orthogonal, so (P R)^T rotates it back. With one class in,
class 1 has no order-0 rows. A group's rotation is one matrix per edge, block-diagonal in its
degrees and padded (as fairchem pads all degrees into one): grouping keeps the padded zeros,
which every batched matmul reads, to the small degrees (0-4), while few groups keep the
number of operations small (on CPU, 25 coefficients per group beat 9 and 16 at lmax 4-6).
"""
from __future__ import annotations

import torch

from molsym.nn.geometry import EdgeGeometry
from molsym.o3.edge_rotation import rotate_into, rotate_out_of

GROUP_WIDTH = 25
"""Most coefficients, sum of 2l + 1, of a group of several degrees."""


def degree_groups(lmax: int, width: int = GROUP_WIDTH) -> list[tuple[int, int]]:
    """Degrees 0..lmax cut into consecutive groups (first, last) of at most ``width``
    coefficients each (a degree wider than that alone)."""
    groups, first = [], 0
    for l in range(1, lmax + 1):
        if (l + 1) ** 2 - first ** 2 > width:
            groups.append((first, l - 1))
            first = l
    return groups + [(first, lmax)]


class SO2Layout:
    """The edge frame's bookkeeping for degrees 0..lmax_in -> 0..lmax_out, orders <= mmax.

    ``orders[m]`` = (n_in, n_out), the numbers of input and output degrees l >= m, for
    m = 0..top, top = min(mmax, lmax_in, lmax_out). ``groups`` = (input, output)
    :func:`degree_groups`.
    """

    def __init__(self, lmax_in: int, lmax_out: int, mmax: int):
        self.lmax_in, self.lmax_out, self.mmax = lmax_in, lmax_out, mmax
        self.orders = [(lmax_in - m + 1, lmax_out - m + 1) for m in range(min(mmax, lmax_in, lmax_out) + 1)]
        self.top = len(self.orders) - 1
        self.groups = (degree_groups(lmax_in), degree_groups(lmax_out))

    def pieces(self, m: int, side: int) -> list[tuple[int, int, int]]:
        """(group, offset, count) of each group holding degrees l >= m on ``side`` (0 in, 1 out):
        its degrees are entries offset..offset+count-1 of order m's degrees m..lmax."""
        out = []
        for g, (first, last) in enumerate(self.groups[side]):
            low = max(first, m)
            if low <= last:
                out.append((g, low - m, last - low + 1))
        return out

    def weight_shapes(self, parities_in: int, channels: int) -> list[tuple[int, ...]]:
        """Per-edge shapes of the channel-wise A_0, A_1, B_1, A_2, B_2, ...: (S_in, C, n_out, n_in) each."""
        shapes = []
        for m, (n_in, n_out) in enumerate(self.orders):
            shapes += [(parities_in, channels, n_out, n_in)] * (1 if m == 0 else 2)
        return shapes

    def mixing_shapes(self, parities_in: int, parities_out: int, channels: int) -> list[tuple[int, ...]]:
        """Per-edge shapes of the channel-wise convolution's weights: A_0 (S_in, C, n_out, n_in), then
        M_m (C, S_out n_out, S_in n_in) for m >= 1."""
        n_in, n_out = self.orders[0]
        return [(parities_in, channels, n_out, n_in)] + [
            (channels, parities_out * n_out, parities_in * n_in) for n_in, n_out in self.orders[1:]]

    def scale_shapes(self, parities_in: int, channels: int) -> list[tuple[int, ...]]:
        """Per-edge shapes of the shared mixing's radial scales of each order: (n_in, S_in, C)."""
        return [(n_in, parities_in, channels) for n_in, _ in self.orders]

    def matrix_shapes(self, parities_in: int, parities_out: int, channels: int) -> list[tuple[int, ...]]:
        """Shapes of the shared mixing's matrices: m = 0 (S_in, n_out C, n_in C), one per class;
        m >= 1 (n_out S_out C, n_in S_in C), rows and columns ordered (degree, class, channel)."""
        c = channels
        return [(parities_in, n_out * c, n_in * c) if m == 0 else (parities_out * n_out * c, parities_in * n_in * c)
                for m, (n_in, n_out) in enumerate(self.orders)]


def frame_rows(lmax: int, top: int, g_form: bool = False, order_zero: bool = True,
               degrees: tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
    """(l, order, sign) of each frame coefficient of the degrees first..last (``degrees``, all
    when None), order-major; ``g_form``: class 1's rows; without ``order_zero``, no m = 0 rows."""
    first, last = degrees or (0, lmax)
    rows = [(l, 0, 1) for l in range(first, last + 1)] if order_zero else []
    for m in range(1, min(top, last) + 1):
        plus, minus = ((-m, 1), (m, -1)) if g_form else ((m, 1), (-m, 1))
        ls = range(max(first, m), last + 1)
        rows += [(l, *plus) for l in ls] + [(l, *minus) for l in ls]
    return rows


def so2_frame_rotation(blocks: list[torch.Tensor], lmax: int, top: int, g_form: bool = False,
                       order_zero: bool = True, degrees: tuple[int, int] | None = None) -> torch.Tensor:
    """The Wigner-D rows of the frame coefficients of :func:`frame_rows` as one matrix per edge.

    blocks: D^l (D, 2l+1, 2l+1) for l = 0..(>= lmax). Returns R (D, K, (last+1)^2 - first^2),
    block-diagonal in the degrees first..last, its columns e3nn's order from l = first.
    """
    first, last = degrees or (0, lmax)
    start, size = first * first, (last + 1) ** 2 - first * first
    by_degree = torch.cat([torch.nn.functional.pad(blocks[l], (l * l - start, start + size - (l + 1) ** 2))
                           for l in range(first, last + 1)], dim=1)  # (D, size, size)
    rows = frame_rows(lmax, top, g_form, order_zero, degrees)
    index = torch.tensor([l * l + l + m - start for l, m, _ in rows], dtype=torch.long, device=by_degree.device)
    rotation = by_degree.index_select(1, index)
    if g_form:
        rotation = rotation * rotation.new_tensor([sign for _, _, sign in rows]).view(1, -1, 1)
    return rotation


def frame_rotation(geometry: EdgeGeometry, lmax: int, top: int, g_form: bool = False, order_zero: bool = True,
                   degrees: tuple[int, int] | None = None) -> torch.Tensor:
    """:func:`so2_frame_rotation` of ``geometry.directed_wigner``, computed once per geometry."""
    key = f"so2_frame_rotation_{lmax}_{top}_{int(g_form)}{int(order_zero)}_{degrees}"
    rotation = geometry._cache.get(key)
    if rotation is None:
        blocks = geometry.directed_wigner(max(lmax, geometry.frame_lmax))
        rotation = so2_frame_rotation(blocks, lmax, top, g_form, order_zero, degrees)
        geometry._cache[key] = rotation
    return rotation


def class_rotations(geometry: EdgeGeometry, layout: SO2Layout, side: int, parity: int,
                    parities_in: int) -> list[torch.Tensor]:
    """The frame rotations of parity class ``parity`` on ``side`` (0 in, 1 out), one
    (D, K_g, (last+1)^2 - first^2) per degree group: class 0 in plain rows, class 1 in G-form
    rows, without order 0 when the input has one class."""
    lmax = layout.lmax_out if side else layout.lmax_in
    return [frame_rotation(geometry, lmax, layout.top, parity == 1, parity == 0 or parities_in == 2, group)
            for group in layout.groups[side]]


def rotate_into_frames(h: torch.Tensor, geometry: EdgeGeometry, layout: SO2Layout) -> list[list[torch.Tensor]]:
    """Senders' features h (N, S, (L_in+1)^2, C) in the directed edges' frames: per class and
    degree group, (D, K_g, C), one matrix per edge (:func:`molsym.o3.edge_rotation.rotate_into`,
    the gather fused in on the CPU)."""
    senders = geometry.directed_index[1]
    parities = h.shape[1]
    return [[rotate_into(rotation, h[:, s, first * first:(last + 1) ** 2], senders)
             for (first, last), rotation in zip(layout.groups[0], class_rotations(geometry, layout, 0, s, parities))]
            for s in range(parities)]


def rotate_back_and_sum(frames: list[list[torch.Tensor]], geometry: EdgeGeometry, layout: SO2Layout,
                        parities_in: int, num_nodes: int, inv_avg_neighbors: float) -> torch.Tensor:
    """Messages in the edge frames, per output class and degree group (D, K_g, C) as from
    :func:`rotate_into_frames`, rotated back and summed onto receivers, divided by
    avg_num_neighbors: (N, S, (L_out+1)^2, C)."""
    receivers = geometry.directed_index[0]
    summed = []
    for s, groups in enumerate(frames):
        rotations = class_rotations(geometry, layout, 1, s, parities_in)
        summed.append(torch.cat([rotate_out_of(rotation, frame, receivers, num_nodes)
                                 for frame, rotation in zip(groups, rotations)], dim=1))
    return torch.stack(summed, dim=1) * inv_avg_neighbors


def order_pieces(frame: torch.Tensor, layout: SO2Layout, group: int) -> list:
    """An input frame (D, K_g, C) of degree group ``group`` split by order m = 0..top:
    (D, count, C) for m = 0, (D, 2, count, C) (the two halves) for m >= 1 (None where the group
    has no degree l >= m); count as in :meth:`SO2Layout.pieces`."""
    first, last = layout.groups[0][group]
    counts = [last - max(first, m) + 1 for m in range(layout.top + 1)]
    parts = iter(frame.split([counts[0]] + [2 * n for n in counts[1:] if n > 0], dim=1))
    blocks = [next(parts)]
    for n in counts[1:]:
        blocks.append(next(parts).view(frame.shape[0], 2, n, frame.shape[-1]) if n > 0 else None)
    return blocks
