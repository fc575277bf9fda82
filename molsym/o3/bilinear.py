"""Fully connected ("uvw") tensor products evaluated without the channel outer product.

e3nn evaluates each path (l1, l2 -> l3) of a fully connected tensor product as
``einsum("uvw,ijk,zuvij->zwk", W, C, x1 ⊗ x2)``: it first forms the outer product x1 ⊗ x2 of
all channel pairs, (z, u, v, i, j) per path, which dominates its time when few output
channels are wanted (the Hessian head's 0e + 1e + 2e blocks have one each). The same numbers
come from contracting in another order:

    b'[z, u, w, j] = sum_v W[u, v, w] x2[z, v, j]          (one matmul, no outer product)
    t[z, w, i, j]  = sum_u x1[z, u, i] b'[z, u, w, j]      (batched matmul)
    out[z, w, k]   = sum_ij t[z, w, i, j] C[i, j, k]       (one matmul with the Wigner 3j)

:func:`fully_connected` does this with the module's own weights, path weights and Wigner-3j
symbols, so it equals ``tp(x1, x2)`` to rounding (a test checks 1e-12 in float64).
"""
from __future__ import annotations

import torch
from e3nn import o3

_W3J: dict[tuple, torch.Tensor] = {}


def _wigner_3j(l1: int, l2: int, l3: int, like: torch.Tensor) -> torch.Tensor:
    """e3nn's Wigner 3j (2l1+1, 2l2+1, 2l3+1), cached per dtype and device."""
    key = (l1, l2, l3, like.dtype, like.device)
    if key not in _W3J:
        _W3J[key] = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).to(dtype=like.dtype, device=like.device)
    return _W3J[key]


def _blocks(x: torch.Tensor, irreps: o3.Irreps) -> list[torch.Tensor]:
    """e3nn's flat layout (Z, irreps.dim) -> one (Z, mul, 2l+1) view per irrep block."""
    out, start = [], 0
    for mul, ir in irreps:
        out.append(x[:, start:start + mul * ir.dim].reshape(x.shape[0], mul, ir.dim))
        start += mul * ir.dim
    return out


def _check(tp: o3.TensorProduct) -> None:
    if not tp.internal_weights or not tp.shared_weights:
        raise ValueError("fully_connected needs a tensor product with internal, shared weights")
    modes = {ins.connection_mode for ins in tp.instructions}
    if modes - {"uvw"} or not all(ins.has_weight for ins in tp.instructions):
        raise ValueError(f"fully_connected evaluates weighted 'uvw' paths only, this product has {sorted(modes)}")


def fully_connected(tp: o3.TensorProduct, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``tp(x1, x2)`` for an e3nn fully connected product (every path 'uvw', internal shared weights).

    x1: (Z, tp.irreps_in1.dim), x2: (Z, tp.irreps_in2.dim) -> (Z, tp.irreps_out.dim), same values
    as the module. Cost per path Z (u v w j + u w i j + w i j k) instead of Z u v i j (w + k).
    """
    _check(tp)
    if x1.shape[:-1] != x2.shape[:-1] or x1.dim() != 2:
        raise ValueError(f"x1 and x2 must be (Z, dim) with the same Z, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    z = x1.shape[0]
    a_blocks, b_blocks = _blocks(x1, tp.irreps_in1), _blocks(x2, tp.irreps_in2)
    outputs: list[torch.Tensor | None] = [None] * len(tp.irreps_out)
    for _, ins, weight in tp.weight_views(yield_instruction=True):
        a, b = a_blocks[ins.i_in1], b_blocks[ins.i_in2]  # (Z, u, i), (Z, v, j)
        (u, i), (v, j) = a.shape[1:], b.shape[1:]
        w_mul, k = tp.irreps_out[ins.i_out].mul, tp.irreps_out[ins.i_out].ir.dim
        c = _wigner_3j(tp.irreps_in1[ins.i_in1].ir.l, tp.irreps_in2[ins.i_in2].ir.l,
                       tp.irreps_out[ins.i_out].ir.l, x1)
        # b'[z, u w, j] = sum_v W[u, v, w] b[z, v, j]
        bw = torch.matmul(weight.permute(0, 2, 1).reshape(u * w_mul, v), b)  # (Z, u w, j)
        # t[z, i, w j] = sum_u a[z, u, i] b'[z, u, w j]
        t = torch.bmm(a.transpose(1, 2), bw.reshape(z, u, w_mul * j))  # (Z, i, w j)
        t = t.reshape(z, i, w_mul, j).transpose(1, 2).reshape(z * w_mul, i * j)
        term = (t @ c.reshape(i * j, k)).reshape(z, w_mul * k) * ins.path_weight
        outputs[ins.i_out] = term if outputs[ins.i_out] is None else outputs[ins.i_out] + term
    pieces = [x1.new_zeros(z, mul * ir.dim) if out is None else out
              for out, (mul, ir) in zip(outputs, tp.irreps_out)]
    return torch.cat(pieces, dim=1)
