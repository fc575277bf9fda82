"""Forces, stress and Hessians as derivatives of the energy (pure functions of model and graph).

Conventions: forces F = -dE/dpos (eV/Å); stress sigma = (1/V) dE/d(epsilon)
for a symmetric strain epsilon applied to positions, lattice shifts and cell
(eV/Å³, ASE's sign: positive when the system pulls inwards); Hessian
H = d^2E/dpos^2 (eV/Å², (3N, 3N), block-diagonal over the structures of a batch).
"""
from __future__ import annotations

import torch

from molsym.data import keys as K


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

    One forward pass builds the gradient's graph (``torch.func.grad``); the rows are
    vector-Hessian products e_k^T H, batched over rows by ``torch.func.vmap`` of the
    gradient's ``vjp``, ``chunk_size`` rows per batched backward pass. Memory grows with
    ``chunk_size`` (each chunk is one batched backward pass), not with 3N, so large molecules
    fit in bounded memory. Runs in the dtype of the positions (float64 for phonons and modes).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    positions = graph[K.POSITIONS].detach()

    def energy(pos: torch.Tensor) -> torch.Tensor:
        return model({**graph, K.POSITIONS: pos})[K.ENERGY].sum()

    _, vector_hessian = torch.func.vjp(torch.func.grad(energy), positions)
    n3 = positions.numel()
    rows = torch.eye(n3, dtype=positions.dtype, device=positions.device).view(n3, *positions.shape)
    (result,) = torch.func.vmap(vector_hessian, chunk_size=chunk_size)(rows)
    return result.reshape(n3, n3).detach()
