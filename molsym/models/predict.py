"""Batched prediction for ase.Atoms: energies, forces, stress (periodic), Hessians."""
from __future__ import annotations

import numpy as np
import torch

from molsym.data import keys as K
from molsym.data.graph import collate, from_ase, to_device
from molsym.models.derivatives import energy_forces_stress, hessian as exact_hessian
from molsym.models.dtypes import model_dtype_device
from molsym.models.threads import policy_threads


def _no_atoms(graph: dict) -> dict:
    """Results of structures without atoms: energy 0 (a sum over no atoms), forces (0, 3), stress 0,
    Hessian (0, 0)."""
    cell = graph[K.CELL]
    return {K.ENERGY: cell.new_zeros(cell.shape[0]), K.FORCES: cell.new_zeros(0, 3), K.STRESS: torch.zeros_like(cell),
            K.HESSIAN: cell.new_zeros(0, 0)}


HESSIAN_METHODS = ("autograd", "head")


def hessian_method(hessian) -> str | None:
    """``hessian`` argument -> None (no Hessian), "autograd" (``True`` too) or "head"; else ValueError."""
    if hessian is False or hessian is None:
        return None
    if hessian is True:
        return "autograd"
    if isinstance(hessian, str) and hessian in HESSIAN_METHODS:
        return hessian
    raise ValueError(f"hessian must be False, True, 'autograd' or 'head', got {hessian!r}")


def predict(model, atoms, *, stress: bool | None = None, hessian: bool | str = False, batch_size: int = 32) -> dict:
    """Predict for one ``ase.Atoms`` or a list of them, in the model's dtype and on its device.

    Args:
        model: a ``molsym.Potential``.
        atoms: one ``ase.Atoms`` or a list/tuple of them.
        stress: ``None`` (default): computed when every structure is fully
            periodic; ``True``: required (``ValueError`` otherwise); ``False``: never.
        hessian: also return Hessians: ``"autograd"`` (or ``True``): exact, one second autograd
            pass per structure; ``"head"``: the model's Hessian head (``heads: {"hessian": ...}``
            in its config; ``ValueError`` without one), one forward pass per batch.
        batch_size: structures per forward pass.

    Returns:
        A dict of float64 numpy data. For one ``Atoms``:
        ``energy`` float (eV), ``forces`` (N, 3) eV/Å, ``stress`` (3, 3) eV/Å³
        and ``hessian`` (3N, 3N) eV/Å². For a list of B structures:
        ``energy`` (B,), ``forces`` a list of B arrays (N_b, 3), ``stress``
        (B, 3, 3) and ``hessian`` a list of B arrays (3N_b, 3N_b).
        Batched and one-by-one predictions agree to rounding. A structure
        without atoms has energy 0, forces (0, 3), stress 0 and Hessian (0, 0).
    """
    single = not isinstance(atoms, (list, tuple))
    structures = [atoms] if single else list(atoms)
    if not structures:
        raise ValueError("predict() needs at least one structure")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    method = hessian_method(hessian)
    if method == "head":
        model.check_heads(("hessian",))
    periodic = all(bool(np.all(a.get_pbc())) for a in structures)
    if stress is None:
        stress = periodic
    elif stress and not periodic:
        raise ValueError("stress is only defined for fully periodic structures (pbc=True along all three cell vectors)")
    dtype, device = model_dtype_device(model)
    energies, forces, stresses, hessians = [], [], [], []
    for start in range(0, len(structures), batch_size):
        chunk = structures[start:start + batch_size]
        graphs = [from_ase(a, model.cutoff, dtype=dtype) for a in chunk]
        graph = to_device(collate(graphs), device)
        with policy_threads(graph):
            out = energy_forces_stress(model, graph, forces=True, stress=stress,
                                       heads=("hessian",) if method == "head" else ()) if len(graph[K.BATCH]) else \
                _no_atoms(graph)
        energies.append(out[K.ENERGY].detach().cpu().double().numpy())
        counts = graph[K.NUM_ATOMS].tolist()
        forces.extend(f.numpy() for f in torch.split(out[K.FORCES].detach().cpu().double(), counts))
        if stress:
            stresses.append(out[K.STRESS].detach().cpu().double().numpy())
        if method == "head":
            offsets = np.cumsum([0] + [3 * c for c in counts])
            predicted = out[K.HESSIAN].detach()
            hessians.extend(predicted[a:b, a:b].cpu().double().numpy() for a, b in zip(offsets[:-1], offsets[1:]))
        elif method == "autograd":
            for g in graphs:
                g = to_device(g, device)
                with policy_threads(g):
                    hessians.append(exact_hessian(model, g).cpu().double().numpy() if len(g[K.BATCH])
                                    else np.zeros((0, 0)))
    result = {"energy": np.concatenate(energies), "forces": forces}
    if stress:
        result["stress"] = np.concatenate(stresses)
    if method is not None:
        result["hessian"] = hessians
    if single:
        result = {k: (float(v[0]) if k == "energy" else v[0]) for k, v in result.items()}
    return result
