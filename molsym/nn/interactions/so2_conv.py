"""The SO(2) convolution of the eSCN layer, as a few batched matmuls (CPU and GPU alike).

For each directed edge j -> i, the sender's coefficients (N, S, (L+1)^2, C), S parity classes,
are rotated into the edge frame (r̂_ij along +y), mixed order by order, rotated back and
summed onto the receivers. In the frame the convolution is, for each order m (A blocks
keeping the parity class, B blocks switching it; m = 0 has A only)::

    y_{+m}[s] = A_m[s] x_{+m}[s] + B_m[1-s] x_{-m}[1-s]
    y_{-m}[s] = A_m[s] x_{-m}[s] - B_m[1-s] x_{+m}[1-s]

Frame layout. Frame coefficients are kept order-major: order 0 for l = 0..L, then for each
m >= 1 the +m coefficients of l = m..L followed by the -m ones, as (D, K, S, C). One batched
matmul per edge (the classes and channels side by side as columns) with the Wigner-D rows
of the kept orders, block-diagonal in the degrees and padded into one matrix per edge (as
fairchem does), rotates every degree in; its transpose rotates back.

G-form. Swapping class 1's pair with a sign, P (x+, x-) = (x-, -x+), gives two halves
g = 0, 1 that read (x+[0], x-[1]) and (x-[0], -x+[1]), on which the convolution is the same
map for both halves::

    out[0] = A[0] G[0] + B[1] G[1],    out[1] = A[1] G[1] - B[0] G[0]

and its result is again in G-form (P undone on class 1 afterwards). So the mixing of an
order is one GEMM over both halves (shared mixing: a learnt matrix over (degree, class,
channel), after a radial scaling) or one batched matmul per (edge, channel) with the two
halves as two columns (channel-wise mixing: per-edge matrices from the radial network).
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


def frame_rows(lmax: int, top: int) -> list[tuple[int, int]]:
    """(l, order) of each kept frame coefficient, order-major (see the module docstring)."""
    rows = [(l, 0) for l in range(lmax + 1)]
    for m in range(1, top + 1):
        rows += [(l, m) for l in range(m, lmax + 1)] + [(l, -m) for l in range(m, lmax + 1)]
    return rows


def so2_frame_rotation(blocks: list[torch.Tensor], lmax: int, top: int) -> torch.Tensor:
    """The Wigner-D rows of the kept frame coefficients as one matrix per edge.

    blocks: D^l (D, 2l+1, 2l+1) for l = 0..(>= lmax). Returns R (D, K, (lmax+1)^2),
    block-diagonal in the degrees, its rows in the order of :func:`frame_rows`.
    """
    size = (lmax + 1) ** 2
    by_degree = torch.cat([torch.nn.functional.pad(blocks[l], (l * l, size - (l + 1) ** 2))
                           for l in range(lmax + 1)], dim=1)  # (D, size, size), e3nn's row order
    index = torch.tensor([l * l + l + m for l, m in frame_rows(lmax, top)], device=by_degree.device)
    return by_degree.index_select(1, index)


def frame_rotation(geometry: EdgeGeometry, lmax: int, top: int) -> torch.Tensor:
    """:func:`so2_frame_rotation` of ``geometry.directed_wigner``, computed once per geometry."""
    key = f"so2_frame_rotation_{lmax}_{top}"
    rotation = geometry._cache.get(key)
    if rotation is None:
        rotation = so2_frame_rotation(geometry.directed_wigner(max(lmax, geometry.frame_lmax)), lmax, top)
        geometry._cache[key] = rotation
    return rotation


def rotate_into_frames(h: torch.Tensor, geometry: EdgeGeometry, layout: SO2Layout) -> torch.Tensor:
    """Senders' features h (N, S, (L_in+1)^2, C) in the directed edges' frames: (D, K_in, S, C),
    one batched matmul per edge with the classes and channels side by side as columns."""
    n, parities, size, c = h.shape
    nodes = h.transpose(1, 2).reshape(n, size, parities * c)
    rotation = frame_rotation(geometry, layout.lmax_in, layout.top)  # (D, K, size)
    frame = torch.bmm(rotation, nodes.index_select(0, geometry.directed_index[1]))  # (D, K, S C)
    return frame.view(frame.shape[0], frame.shape[1], parities, c)


def rotate_back_and_sum(frame: torch.Tensor, geometry: EdgeGeometry, layout: SO2Layout, num_nodes: int,
                        inv_avg_neighbors: float) -> torch.Tensor:
    """Messages (D, K_out, S, C) in the edge frames, rotated back and summed onto receivers,
    divided by avg_num_neighbors: (N, S, (L_out+1)^2, C)."""
    edges, rows, parities, c = frame.shape
    rotation = frame_rotation(geometry, layout.lmax_out, layout.top)  # (D, K, size)
    size = rotation.shape[-1]
    messages = torch.bmm(rotation.transpose(1, 2), frame.reshape(edges, rows, parities * c))  # (D, size, S C)
    aggregated = scatter_sum(messages.view(edges, size * parities * c), geometry.directed_index[0], num_nodes)
    return (aggregated * inv_avg_neighbors).view(num_nodes, size, parities, c).transpose(1, 2)


def _order_blocks(frame: torch.Tensor, layout: SO2Layout) -> list[torch.Tensor]:
    """The frame (D, K_in, S, C) split by order: (D, 1, n_in, S, C) for m = 0, (D, 2, n_in, S, C)
    (+m, then -m) after."""
    sizes = [n_in * (1 if m == 0 else 2) for m, (n_in, _) in enumerate(layout.orders)]
    edges, _, parities, c = frame.shape
    return [block.view(edges, 1 if m == 0 else 2, layout.orders[m][0], parities, c)
            for m, block in enumerate(frame.split(sizes, dim=1))]


def _to_g_form(x: torch.Tensor) -> torch.Tensor:
    """(D, 2, n, S, C) with halves (+m, -m) -> halves g: class 1 (x+, x-) -> (x-, -x+)."""
    if x.shape[3] == 1:
        return x
    swapped = x[:, :, :, 1].flip(1) * x.new_tensor([1.0, -1.0]).view(1, 2, 1, 1)
    return torch.stack((x[:, :, :, 0], swapped), dim=3)


def _from_g_form(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_to_g_form`: class 1 (g0, g1) -> (-g1, g0)."""
    swapped = y[:, :, :, 1].flip(1) * y.new_tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    return torch.stack((y[:, :, :, 0], swapped), dim=3)


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
    frame = rotate_into_frames(h, geometry, layout)  # (D, K_in, S_in, C)
    edges = frame.shape[0]
    copies = _copies(weights[0], edges, geometry)
    rows = edges // copies
    out = []
    for m, block in enumerate(_order_blocks(frame, layout)):
        n_in, n_out = layout.orders[m]
        if m == 0:
            x = block.view(copies, rows, n_in, parities_in, c).permute(1, 3, 4, 2, 0)  # (R, S_in, C, n_in, copies)
            y = weights[0] @ x
            if parities_in < parities_out:
                y = torch.cat((y, torch.zeros_like(y)), dim=1)
            out.append(y.permute(4, 0, 3, 1, 2).reshape(edges, n_out, parities_out, c))
            continue
        x = _to_g_form(block).view(copies, rows, 2, n_in, parities_in, c).permute(1, 5, 4, 3, 0, 2)
        y = weights[m] @ x.reshape(rows, c, parities_in * n_in, 2 * copies)  # (R, C, S_out n_out, copies g)
        y = y.view(rows, c, parities_out, n_out, copies, 2).permute(4, 0, 5, 3, 2, 1)  # (copies, R, g, n, S, C)
        out.append(_from_g_form(y.reshape(edges, 2, n_out, parities_out, c)).reshape(edges, 2 * n_out, parities_out, c))
    return rotate_back_and_sum(torch.cat(out, dim=1), geometry, layout, n, inv_avg_neighbors)


def block_diagonal_order_zero(matrix: torch.Tensor, n_out: int, n_in: int, parities_out: int) -> torch.Tensor:
    """The order-0 shared matrix (S_in, n_out C, n_in C), one block per class, as one
    (n_out S_out C, n_in S_in C) matrix in (degree, class, channel) order (zero across classes)."""
    parities_in, c = matrix.shape[0], matrix.shape[1] // n_out
    eye = torch.eye(parities_out, parities_in, dtype=matrix.dtype, device=matrix.device)
    blocks = matrix.view(parities_in, n_out, c, n_in, c)
    return torch.einsum("st,toaib->osaitb", eye, blocks).reshape(n_out * parities_out * c, n_in * parities_in * c)


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
    frame = rotate_into_frames(h, geometry, layout)  # (D, K_in, S_in, C)
    edges = frame.shape[0]
    copies = _copies(scales[0], edges, geometry)
    out = []
    for m, block in enumerate(_order_blocks(frame, layout)):
        n_in, n_out = layout.orders[m]
        halves = block.shape[1]
        x = (block.view(copies, edges // copies, halves, n_in, parities_in, c) * scales[m].unsqueeze(1)).view(block.shape)
        if m == 0:
            matrix = block_diagonal_order_zero(matrices[0], n_out, n_in, parities_out)
            y = torch.nn.functional.linear(x.reshape(edges, n_in * parities_in * c), matrix)
            out.append(y.view(edges, n_out, parities_out, c))
            continue
        rows = _to_g_form(x).reshape(edges * 2, n_in * parities_in * c)
        mixed = torch.nn.functional.linear(rows, matrices[m]).view(edges, 2, n_out, parities_out, c)
        out.append(_from_g_form(mixed).reshape(edges, 2 * n_out, parities_out, c))
    return rotate_back_and_sum(torch.cat(out, dim=1), geometry, layout, n, inv_avg_neighbors)


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
