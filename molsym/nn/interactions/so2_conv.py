"""The SO(2) convolution of the eSCN layer, as a few batched matmuls (CPU and GPU alike).

For each directed edge j -> i, the sender's coefficients (N, S, (L+1)^2, C), S parity classes,
are rotated into the edge frame (r̂_ij along +y), mixed order by order, rotated back and
summed onto the receivers. In the frame the convolution is, for each order m (A blocks
keeping the parity class, B blocks switching it; m = 0 has A only)::

    y_{+m}[s] = A_m[s] x_{+m}[s] + B_m[1-s] x_{-m}[1-s]
    y_{-m}[s] = A_m[s] x_{-m}[s] - B_m[1-s] x_{+m}[1-s]

The frames, their rotations and the sum onto receivers are in
``molsym.nn.interactions.so2_frames``: one (D, K, C) frame per parity class and group of degrees.

G-form. Swapping class 1's pair with a sign, P (x+, x-) = (x-, -x+), gives two halves
g = 0, 1 that read (x+[0], x-[1]) and (x-[0], -x+[1]), on which the convolution is the same
map for both halves::

    out[0] = A[0] G[0] + B[1] G[1],    out[1] = A[1] G[1] - B[0] G[0]

and its result is again in G-form. Class 1 is rotated in and back with the rows of P R
(R the plain rows), so its frame is in G-form from the start and no copy swaps it. The
mixing of an order is one GEMM over both halves (shared mixing: a learnt matrix over
(degree, class, channel), after a radial scaling; split by class and degree group) or one
small matrix per (edge, channel) applied to both halves (channel-wise mixing: per-edge
matrices from the radial network; ``molsym.nn.interactions.channelwise_mixing``, a fused kernel
on the CPU).
"""
from __future__ import annotations

import torch

from molsym.nn.geometry import EdgeGeometry
from molsym.nn.interactions.channelwise_mixing import channel_mix
from molsym.nn.interactions.so2_frames import SO2Layout, order_pieces, rotate_back_and_sum, rotate_into_frames


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


def _join(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torch.cat, without a copy of a single part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _frames_in(h: torch.Tensor, geometry: EdgeGeometry, layout: SO2Layout) -> list[list[list]]:
    """The input frames split by class, degree group and order (:func:`order_pieces`)."""
    frames = rotate_into_frames(h, geometry, layout)
    return [[order_pieces(frame, layout, g) for g, frame in enumerate(groups)] for groups in frames]


def so2_convolution(h: torch.Tensor, weights: list[torch.Tensor], geometry: EdgeGeometry, layout: SO2Layout,
                    parities_out: int, inv_avg_neighbors: float) -> torch.Tensor:
    """Channel-wise mixing: h (N, S_in, (L_in+1)^2, C) -> messages summed, (N, S_out, (L_out+1)^2, C).

    ``weights``, one row per directed edge (order of ``geometry.directed_index``) or per pair row
    (R = D / 2, both directions of a symmetric geometry): A_0 (R, S_in, C, n_out, n_in), then for
    each order m >= 1 M_m (R, C, S_out n_out(m), S_in n_in(m)) (:func:`mixing_matrix`;
    :func:`channelwise_weights` makes them from A_m, B_m), at any strides; the eSCN layer's
    radial network emits them with the channels innermost, the layout
    :func:`~molsym.nn.interactions.channelwise_mixing.channel_mix` reads in place. Per order, one
    small matrix per (row, channel) applied to the G-form block's two halves (and both directions).
    """
    n, parities_in, _, c = h.shape
    pieces = _frames_in(h, geometry, layout)
    edges = pieces[0][0][0].shape[0]
    _copies(weights[0], edges, geometry)
    out = [[[] for _ in layout.groups[1]] for _ in range(parities_out)]  # per class and group, its order blocks
    for m, (_, n_out) in enumerate(layout.orders):
        ins, outs = layout.pieces(m, 0), layout.pieces(m, 1)
        if m == 0:  # A_0 keeps the class: class s in, class s out
            for s, groups in enumerate(pieces):
                x = _join([groups[g][0] for g, _, _ in ins], 1).unsqueeze(1)  # (D, 1, n_in, C)
                y = channel_mix(weights[0][:, s].permute(0, 2, 3, 1), x)  # (D, 1, n_out, C)
                for g, i, k in outs:
                    out[s][g].append(y[:, 0, i:i + k])
            continue
        x = _join([groups[g][m] for groups in pieces for g, _, _ in ins], 2)  # (D, 2, S_in n_in, C)
        y = channel_mix(weights[m].permute(0, 2, 3, 1), x).view(edges, 2, parities_out, n_out, c)
        for t in range(parities_out):
            for g, i, k in outs:
                out[t][g].append(y[:, :, t, i:i + k].reshape(edges, 2 * k, c))
    frames = [[torch.cat(blocks, dim=1) for blocks in groups] for groups in out]
    return rotate_back_and_sum(frames, geometry, layout, parities_in, n, inv_avg_neighbors)


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
    column-wise by the scales (:func:`shared_matrices`). The GEMM runs split by input class
    and degree group (accumulated) and by output degree group.
    """
    n, parities_in, _, c = h.shape
    pieces = _frames_in(h, geometry, layout)
    edges = pieces[0][0][0].shape[0]
    copies = _copies(scales[0], edges, geometry)
    out = [[[] for _ in layout.groups[1]] for _ in range(parities_out)]  # per class and group, its order blocks
    for m, (n_in, n_out) in enumerate(layout.orders):
        ins, outs = layout.pieces(m, 0), layout.pieces(m, 1)
        halves = 1 if m == 0 else 2
        x = []  # per (class, input group): the class, scaled rows (halves D, count C), the matrix's columns
        for s, (groups, scale) in enumerate(zip(pieces, scales[m].unbind(2))):
            matrix = matrices[0][s].view(n_out, 1, c, n_in, 1, c) if m == 0 else \
                matrices[m].view(n_out, parities_out, c, n_in, parities_in, c)[:, :, :, :, s:s + 1]
            for (g, i, k), part in zip(ins, _directed(scale, copies).split([k for _, _, k in ins], dim=1)):
                block = groups[g][m] * (part if m == 0 else part.unsqueeze(1))
                x.append((s, block.view(halves * edges, k * c), matrix[:, :, :, i:i + k]))
        # per output class t: m = 0 the terms of class t (A[t]); m >= 1 all, with the matrix's rows of class t
        sums = [(t, [term for term in x if term[0] == t], 0) for t in range(parities_in)] if m == 0 else \
            [(t, x, t) for t in range(parities_out)]
        for g, i, k in outs:
            for t, terms, row in sums:
                y = None
                for _, rows, matrix in terms:
                    weight = matrix[i:i + k, row].reshape(k * c, -1)
                    y = torch.nn.functional.linear(rows, weight) if y is None else y.addmm_(rows, weight.t())
                out[t][g].append(y.view(edges, halves * k, c))
    frames = [[torch.cat(blocks, dim=1) for blocks in groups] for groups in out]
    return rotate_back_and_sum(frames, geometry, layout, parities_in, n, inv_avg_neighbors)


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
