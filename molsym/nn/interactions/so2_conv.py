"""The SO(2) convolution of the eSCN layer, as a few batched matmuls (CPU and GPU alike).

For each directed edge j -> i, the sender's coefficients (N, S, (L+1)^2, C), S parity classes,
are rotated into the edge frame (r̂_ij along +y), mixed order by order, rotated back and
summed onto the receivers. In the frame the convolution is, for each order m (A blocks
keeping the parity class, B blocks switching it; m = 0 has A only)::

    y_{+m}[s] = A_m[s] x_{+m}[s] + B_m[1-s] x_{-m}[1-s]
    y_{-m}[s] = A_m[s] x_{-m}[s] - B_m[1-s] x_{+m}[1-s]

Frame layout. Frame coefficients are kept order-major: order 0 for l = 0..L, then for each
m >= 1 the +m coefficients of l = m..L followed by the -m ones, one (D, K, C) frame per class.
One batched matmul per edge with the Wigner-D rows of the kept orders, block-diagonal in the
degrees and padded into one matrix per edge (as fairchem does), rotates every degree in; its
transpose rotates back.

G-form. Swapping class 1's pair with a sign, P (x+, x-) = (x-, -x+), gives two halves
g = 0, 1 that read (x+[0], x-[1]) and (x-[0], -x+[1]), on which the convolution is the same
map for both halves::

    out[0] = A[0] G[0] + B[1] G[1],    out[1] = A[1] G[1] - B[0] G[0]

and its result is again in G-form. Class 1 is rotated in and back with the rows of P R
(R the plain rows; P is orthogonal, so (P R)^T undoes P on the way back): its frame is in
G-form from the start and no copy swaps it. With one class in, class 1 has no order-0
rows. So the mixing of an order is one GEMM over both halves (shared mixing: a learnt
matrix over (degree, class, channel), after a radial scaling) or one batched matmul per
(edge, channel) with the two halves as two columns (channel-wise mixing: per-edge matrices
from the radial network).
"""
from __future__ import annotations

import torch

from molsym.nn.geometry import EdgeGeometry
from molsym.nn.scatter import scatter_sum


class SO2Layout:
    """The edge frame's bookkeeping for degrees 0..lmax_in -> 0..lmax_out, orders <= mmax.

    ``orders[m]`` = (n_in, n_out), the numbers of input and output degrees l >= m, for
    m = 0..top, top = min(mmax, lmax_in, lmax_out).
    """

    def __init__(self, lmax_in: int, lmax_out: int, mmax: int):
        self.lmax_in, self.lmax_out, self.mmax = lmax_in, lmax_out, mmax
        self.orders = [(lmax_in - m + 1, lmax_out - m + 1) for m in range(min(mmax, lmax_in, lmax_out) + 1)]
        self.top = len(self.orders) - 1

    def weight_shapes(self, parities_in: int, channels: int) -> list[tuple[int, ...]]:
        """Per-edge shapes of the channel-wise A_0, A_1, B_1, A_2, B_2, ...: (S_in, C, n_out, n_in) each."""
        shapes = []
        for m, (n_in, n_out) in enumerate(self.orders):
            shapes += [(parities_in, channels, n_out, n_in)] * (1 if m == 0 else 2)
        return shapes

    def mixing_shapes(self, parities_in: int, parities_out: int, channels: int) -> list[tuple[int, ...]]:
        """Per-edge shapes of :func:`so2_convolution`'s weights: A_0 (S_in, C, n_out, n_in), then
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


def frame_rows(lmax: int, top: int, g_form: bool = False, order_zero: bool = True) -> list[tuple[int, int, int]]:
    """(l, order, sign) of each kept frame coefficient, order-major (see the module docstring):
    with ``g_form`` the rows of order m >= 1 are (-m, then -(+m)), class 1's G-form; without
    ``order_zero`` the m = 0 rows are left out."""
    rows = [(l, 0, 1) for l in range(lmax + 1)] if order_zero else []
    for m in range(1, top + 1):
        first, second = ((-m, 1), (m, -1)) if g_form else ((m, 1), (-m, 1))
        rows += [(l, *first) for l in range(m, lmax + 1)] + [(l, *second) for l in range(m, lmax + 1)]
    return rows


def so2_frame_rotation(blocks: list[torch.Tensor], lmax: int, top: int, g_form: bool = False,
                       order_zero: bool = True) -> torch.Tensor:
    """The Wigner-D rows of the kept frame coefficients as one matrix per edge.

    blocks: D^l (D, 2l+1, 2l+1) for l = 0..(>= lmax). Returns R (D, K, (lmax+1)^2),
    block-diagonal in the degrees, its rows (signed) in the order of :func:`frame_rows`.
    """
    size = (lmax + 1) ** 2
    by_degree = torch.cat([torch.nn.functional.pad(blocks[l], (l * l, size - (l + 1) ** 2))
                           for l in range(lmax + 1)], dim=1)  # (D, size, size), e3nn's row order
    rows = frame_rows(lmax, top, g_form, order_zero)
    index = torch.tensor([l * l + l + m for l, m, _ in rows], device=by_degree.device)
    rotation = by_degree.index_select(1, index)
    if g_form:
        rotation = rotation * rotation.new_tensor([sign for _, _, sign in rows]).view(1, -1, 1)
    return rotation


def frame_rotation(geometry: EdgeGeometry, lmax: int, top: int, g_form: bool = False,
                   order_zero: bool = True) -> torch.Tensor:
    """:func:`so2_frame_rotation` of ``geometry.directed_wigner``, computed once per geometry."""
    key = f"so2_frame_rotation_{lmax}_{top}_{int(g_form)}{int(order_zero)}"
    rotation = geometry._cache.get(key)
    if rotation is None:
        blocks = geometry.directed_wigner(max(lmax, geometry.frame_lmax))
        rotation = so2_frame_rotation(blocks, lmax, top, g_form, order_zero)
        geometry._cache[key] = rotation
    return rotation


def class_rotation(geometry: EdgeGeometry, lmax: int, layout: SO2Layout, parity: int,
                   parities_in: int) -> torch.Tensor:
    """The frame rotation of parity class ``parity``, (D, K_s, (lmax+1)^2): class 0 in the plain
    order-major rows, class 1 in G-form rows, without order 0 when the input has one class
    (class 1 then has no order-0 coefficients, in or out)."""
    return frame_rotation(geometry, lmax, layout.top, g_form=parity == 1, order_zero=parity == 0 or parities_in == 2)


def rotate_into_frames(h: torch.Tensor, geometry: EdgeGeometry, layout: SO2Layout) -> list[torch.Tensor]:
    """Senders' features h (N, S, (L_in+1)^2, C) in the directed edges' frames: per class s,
    (D, K_s, C) (:func:`class_rotation`), one batched matmul per edge."""
    senders = geometry.directed_index[1]
    parities = h.shape[1]
    return [torch.bmm(class_rotation(geometry, layout.lmax_in, layout, s, parities), h[:, s].index_select(0, senders))
            for s in range(parities)]


def rotate_back_and_sum(frames: list[torch.Tensor], geometry: EdgeGeometry, layout: SO2Layout, parities_in: int,
                        num_nodes: int, inv_avg_neighbors: float) -> torch.Tensor:
    """Messages in the edge frames, per output class (D, K_s, C) as from :func:`rotate_into_frames`,
    rotated back and summed onto receivers, divided by avg_num_neighbors: (N, S, (L_out+1)^2, C)."""
    receivers = geometry.directed_index[0]
    summed = []
    for s, frame in enumerate(frames):
        rotation = class_rotation(geometry, layout.lmax_out, layout, s, parities_in)
        messages = torch.bmm(rotation.transpose(1, 2), frame)  # (D, size, C)
        summed.append(scatter_sum(messages.view(messages.shape[0], -1), receivers, num_nodes))
    size, c = (layout.lmax_out + 1) ** 2, frames[0].shape[-1]
    return (torch.stack(summed, dim=1) * inv_avg_neighbors).view(num_nodes, len(frames), size, c)


def _order_blocks(frame: torch.Tensor, layout: SO2Layout, order_zero: bool) -> list:
    """A class's input frame (D, K_s, C) split by order: (D, n_in, C) for m = 0 (None without
    ``order_zero``), (D, 2, n_in, C) (the two halves) after."""
    counts = [n_in for n_in, _ in layout.orders]
    sizes = ([counts[0]] if order_zero else []) + [2 * n for n in counts[1:]]
    parts = list(frame.split(sizes, dim=1))
    blocks = [parts.pop(0) if order_zero else None]
    return blocks + [part.view(part.shape[0], 2, n, part.shape[-1]) for part, n in zip(parts, counts[1:])]


def mixing_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The channel-wise mixing of an order m >= 1 from its blocks A_m, B_m (..., S_in, C, n_out, n_in):
    (..., C, S_out n_out, S_in n_in), [[A[0], B[1]], [-B[0], A[1]]] (S_in = 2) or [[A[0]], [-B[0]]]."""
    a, b = a.movedim(-4, -3), b.movedim(-4, -3)  # (..., C, S_in, n_out, n_in)
    if a.shape[-3] == 2:
        top = torch.cat((a[..., 0, :, :], b[..., 1, :, :]), dim=-1)
        return torch.cat((top, torch.cat((-b[..., 0, :, :], a[..., 1, :, :]), dim=-1)), dim=-2)
    return torch.cat((a[..., 0, :, :], -b[..., 0, :, :]), dim=-2)


def channelwise_weights(blocks: list[torch.Tensor]) -> list[torch.Tensor]:
    """[A_0, A_1, B_1, A_2, B_2, ...] (each (..., S_in, C, n_out, n_in)) -> the weights of
    :func:`so2_convolution`: [A_0, M_1, M_2, ...] with M_m = :func:`mixing_matrix` (A_m, B_m)."""
    return [blocks[0]] + [mixing_matrix(blocks[2 * m - 1], blocks[2 * m]) for m in range(1, (len(blocks) + 1) // 2)]


def _copies(weights: torch.Tensor, edges: int, geometry: EdgeGeometry) -> int:
    """1 if ``weights`` has a row per directed edge, 2 if one per pair row of a symmetric geometry
    (its directed edges are the rows, then their reverses, which share the row's weights)."""
    rows = weights.shape[0]
    if rows == edges:
        return 1
    if geometry.symmetric and 2 * rows == edges:
        return 2
    raise ValueError(f"SO(2) weights have {rows} rows for {edges} directed edges: expected one per directed "
                     "edge, or one per pair row of a symmetric geometry")


def _directed(weights: torch.Tensor, copies: int) -> torch.Tensor:
    """Per-row weights (R, ...) repeated for the reverse edges when ``copies`` is 2: (D, ...)."""
    return torch.cat((weights, weights)) if copies == 2 else weights


def so2_convolution(h: torch.Tensor, weights: list[torch.Tensor], geometry: EdgeGeometry, layout: SO2Layout,
                    parities_out: int, inv_avg_neighbors: float) -> torch.Tensor:
    """Channel-wise mixing: h (N, S_in, (L_in+1)^2, C) -> messages summed, (N, S_out, (L_out+1)^2, C).

    ``weights``, one row per directed edge (order of ``geometry.directed_index``) or per pair row
    (R = D / 2, both directions of a symmetric geometry): A_0 (R, S_in, C, n_out, n_in), then for
    each order m >= 1 M_m (R, C, S_out n_out(m), S_in n_in(m)) (:func:`mixing_matrix`;
    :func:`channelwise_weights` makes them from A_m, B_m). Per order, one batched matmul per
    (row, channel) with the G-form block, its two halves (and both directions) as columns.
    """
    n, parities_in, _, c = h.shape
    frames = rotate_into_frames(h, geometry, layout)  # S_in x (D, K_s, C)
    edges = frames[0].shape[0]
    copies = _copies(weights[0], edges, geometry)
    rows = edges // copies
    blocks = [_order_blocks(frame, layout, True) for frame in frames]
    out = [[] for _ in range(parities_out)]  # per output class, its frame's order blocks
    for m, (n_in, n_out) in enumerate(layout.orders):
        if m == 0:
            x = torch.stack([b[0].view(copies, rows, n_in, c).permute(1, 3, 2, 0) for b in blocks], dim=1)
            y = weights[0] @ x  # (R, S_in, C, n_out, copies)
            for s, part in enumerate(y.unbind(1)):
                out[s].append(part.permute(3, 0, 2, 1).reshape(edges, n_out, c))
            continue
        x = torch.stack([b[m].view(copies, rows, 2, n_in, c).permute(1, 4, 3, 0, 2) for b in blocks], dim=2)
        y = weights[m] @ x.view(rows, c, parities_in * n_in, copies * 2)  # (R, C, S_out n_out, copies g)
        for s, part in enumerate(y.view(rows, c, parities_out, n_out, copies, 2).unbind(2)):
            out[s].append(part.permute(3, 0, 4, 2, 1).reshape(edges, 2 * n_out, c))
    return rotate_back_and_sum([torch.cat(o, dim=1) for o in out], geometry, layout, parities_in, n,
                               inv_avg_neighbors)


def so2_convolution_shared(h: torch.Tensor, scales: list[torch.Tensor], matrices: list[torch.Tensor],
                           geometry: EdgeGeometry, layout: SO2Layout, parities_out: int,
                           inv_avg_neighbors: float) -> torch.Tensor:
    """Shared mixing: h (N, S_in, (L_in+1)^2, C) -> messages summed, (N, S_out, (L_out+1)^2, C).

    Per order m, the frame coefficients are scaled per edge by ``scales[m]`` (R, n_in, S_in, C),
    one row per directed edge or per pair row (as in :func:`so2_convolution`), from the radial
    network and the same for +m and -m, then mixed over (degree, class,
    channel) jointly by one GEMM with ``matrices[m]`` (:meth:`SO2Layout.matrix_shapes`):
    m = 0 one block per class (A[s]); m >= 1, in class blocks, [[A[0], B[1]], [-B[0], A[1]]]
    (S_in = 2) or [[A[0]], [-B[0]]] (S_in = 1) applied to both halves of the G-form block.
    With channel-diagonal matrices this is the channel-wise convolution with A and B scaled
    column-wise by the scales (:func:`shared_matrices`).
    """
    n, parities_in, _, c = h.shape
    frames = rotate_into_frames(h, geometry, layout)  # S_in x (D, K_s, C)
    edges = frames[0].shape[0]
    copies = _copies(scales[0], edges, geometry)
    blocks = [_order_blocks(frame, layout, True) for frame in frames]
    out = [[] for _ in range(parities_out)]  # per output class, its frame's order blocks
    for m, (n_in, n_out) in enumerate(layout.orders):
        scale = [_directed(part, copies) for part in scales[m].unbind(2)]  # (D, n_in, C) per class
        if m == 0:
            for s in range(parities_in):
                x = (blocks[s][0] * scale[s]).view(edges, n_in * c)
                out[s].append(torch.nn.functional.linear(x, matrices[0][s]).view(edges, n_out, c))
            continue
        columns = matrices[m].view(n_out * parities_out * c, n_in, parities_in, c)
        mixed = None
        for s in range(parities_in):  # the GEMM split by input class: its columns (n_in, s, C)
            x = (blocks[s][m] * scale[s].unsqueeze(1)).view(2 * edges, n_in * c)
            weight = columns[:, :, s].reshape(-1, n_in * c)
            mixed = torch.nn.functional.linear(x, weight) if mixed is None else mixed.addmm_(x, weight.t())
        for s, part in enumerate(mixed.view(edges, 2, n_out, parities_out, c).unbind(3)):
            out[s].append(part.reshape(edges, 2 * n_out, c))
    return rotate_back_and_sum([torch.cat(o, dim=1) for o in out], geometry, layout, parities_in, n,
                               inv_avg_neighbors)


def shared_matrices(blocks: list[torch.Tensor], layout: SO2Layout) -> list[torch.Tensor]:
    """The shared-mixing matrices equal to edge-independent channel-wise blocks.

    blocks: [A_0, A_1, B_1, ...], each (S_in, C, n_out, n_in). Returns the channel-diagonal
    matrices of :func:`so2_convolution_shared`, so that with scales s the two convolutions
    agree when A and B are multiplied column-wise by s (A[s, c, :, i] s[i, s, c]).
    """
    parities, c = blocks[0].shape[:2]
    eye = torch.eye(c, dtype=blocks[0].dtype, device=blocks[0].device)

    def diagonal(block):  # (C, n_out, n_in) -> (n_out, C, n_in, C)
        return torch.einsum("cd,coi->ocid", eye, block)

    n_out0, n_in0 = blocks[0].shape[2:]
    matrices = [torch.stack([diagonal(blocks[0][s]).reshape(n_out0 * c, n_in0 * c) for s in range(parities)])]
    for m in range(1, len(layout.orders)):
        a, b = blocks[2 * m - 1], blocks[2 * m]
        if parities == 2:
            grid = [[diagonal(a[0]), diagonal(b[1])], [-diagonal(b[0]), diagonal(a[1])]]
        else:
            grid = [[diagonal(a[0])], [-diagonal(b[0])]]
        n_out, n_in = a.shape[2:]
        # (S_out, S_in, n_out, C, n_in, C) -> rows (n_out, S_out, C), columns (n_in, S_in, C)
        full = torch.stack([torch.stack(row) for row in grid])
        matrices.append(full.permute(2, 0, 3, 4, 1, 5).reshape(n_out * len(grid) * c, n_in * parities * c))
    return matrices
