"""Forces, stress and Hessians as derivatives of the energy (pure functions of model and graph).

Conventions: forces F = -dE/dpos (eV/Å); stress sigma = (1/V) dE/d(epsilon)
for a symmetric strain epsilon applied to positions, lattice shifts and cell
(eV/Å³, ASE's sign: positive when the system pulls inwards); Hessian
H = d^2E/dpos^2 (eV/Å², (3N, 3N), block-diagonal over the structures of a batch).
"""
from __future__ import annotations

import contextlib

import torch

from molsym.data import keys as K
from molsym.models.allocator import heap_allocations


def cell_volumes(cell: torch.Tensor) -> torch.Tensor:
    """|det(cell)| per structure, (B,) Å³."""
    return torch.linalg.det(cell).abs()


def _apply_strain(graph: dict, strain: torch.Tensor) -> dict:
    """Deform positions, edge shifts and cell by (Id + sym(strain)) (row-vector convention)."""
    sym = 0.5 * (strain + strain.transpose(-1, -2))
    batch = graph[K.BATCH]
    edge_graph = batch.index_select(0, graph[K.EDGE_INDEX][0])
    pos, shift = graph[K.POSITIONS], graph[K.EDGE_SHIFT]
    strained = dict(graph)
    strained[K.POSITIONS] = pos + torch.einsum("na,nab->nb", pos, sym.index_select(0, batch))
    strained[K.EDGE_SHIFT] = shift + torch.einsum("ea,eab->eb", shift, sym.index_select(0, edge_graph))
    strained[K.CELL] = graph[K.CELL] + graph[K.CELL] @ sym
    return strained


def energy_forces_stress(model, graph: dict, *, forces: bool = True, stress: bool = False,
                         create_graph: bool = False, heads=()) -> dict[str, torch.Tensor]:
    """Energy (B,), atomic energies (N,), and on request forces (N, 3) and stress (B, 3, 3).

    ``heads``: names of the model's heads to evaluate in the same forward pass (their outputs
    under their names, e.g. "hessian" (3N, 3N) eV/Å² from the Hessian head).

    ``create_graph=True`` keeps the graph of the derivatives (training on forces,
    Hessians). Stress needs a cell of non-zero volume in every structure. Runs on the
    threads torch has; the entry points choose them (``molsym.models.threads``).
    """
    graph = dict(graph)
    positions = graph[K.POSITIONS]
    if forces and not positions.requires_grad:
        positions = positions.detach().requires_grad_(True)
        graph[K.POSITIONS] = positions
    inputs = [positions] if forces else []
    model_graph = graph
    if stress:
        volumes = cell_volumes(graph[K.CELL])
        if bool((volumes < 1e-8).any()):
            raise ValueError("stress needs a cell with non-zero volume for every structure (got a zero-volume cell)")
        strain = torch.zeros_like(graph[K.CELL], requires_grad=True)
        inputs.append(strain)
        model_graph = _apply_strain(graph, strain)
    out = model(model_graph, heads=tuple(heads)) if heads else model(model_graph)
    if not inputs:
        return out
    grads = torch.autograd.grad(out[K.ENERGY].sum(), inputs, create_graph=create_graph, allow_unused=True)
    result = dict(out)
    k = 0
    if forces:
        g = grads[0]
        result[K.FORCES] = -g if g is not None else torch.zeros_like(positions)
        k = 1
    if stress:
        g = grads[k]
        g = g if g is not None else torch.zeros_like(graph[K.CELL])
        result[K.STRESS] = g / volumes[:, None, None]
    return result


def hessian(model, graph: dict, *, chunk_size: int = 8) -> torch.Tensor:
    """Exact Hessian d^2E/dpos^2, (3N, 3N) eV/Å², block-diagonal over the structures of a batch.

    One forward pass builds the gradient's graph; the rows are vector-Hessian products
    e_k^T H, ``chunk_size`` rows per backward pass batched by vmap (autograd's
    ``is_grads_batched``, which vmaps the backward graph only: the model's forward runs
    once, untransformed, so nothing in it has to be written for ``torch.func``). Memory grows
    with ``chunk_size``, not with 3N, so large molecules fit in bounded memory. Runs in the
    dtype of the positions (float64 for phonons and normal modes).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    positions = graph[K.POSITIONS].detach().requires_grad_(True)
    energy = model({**graph, K.POSITIONS: positions})[K.ENERGY].sum()
    (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
    gradient = gradient.reshape(-1)
    n3 = gradient.numel()
    result = positions.new_zeros(n3, n3)
    if not gradient.requires_grad:  # energy independent of positions (no edges)
        return result.detach()
    eye = torch.eye(n3, dtype=gradient.dtype, device=gradient.device)
    # on CPU the passes' large temporaries come from the heap and are reused, not mapped anew
    with heap_allocations() if gradient.device.type == "cpu" else contextlib.nullcontext():
        for start in range(0, n3, chunk_size):
            stop = min(start + chunk_size, n3)
            (block,) = torch.autograd.grad(gradient, positions, grad_outputs=eye[start:stop], retain_graph=True,
                                           is_grads_batched=True, allow_unused=True)
            if block is not None:
                result[start:stop] = block.reshape(stop - start, n3)
    return result.detach()
