"""Batched prediction for ase.Atoms: energies, forces, stress (periodic), Hessians."""
from __future__ import annotations

import numpy as np
import torch

from molsym.data import keys as K
from molsym.data.graph import collate, from_ase, to_device
from molsym.models.derivatives import energy_forces_stress, hessian as exact_hessian


def _model_dtype_device(model):
    p = next(model.parameters())
    return p.dtype, p.device


def predict(model, atoms, *, stress: bool | None = None, hessian: bool = False, batch_size: int = 32):
    """Predict for one ``ase.Atoms`` or a list of them.

    Returns a dict of numpy arrays: ``energy`` (float for one structure, (B,)
    for a list, eV), ``forces`` ((N, 3) or a list of them, eV/Å), ``stress``
    ((3, 3) eV/Å³, when every structure is fully periodic, or when
    ``stress=True``, which requires it) and ``hessian`` ((3N, 3N) eV/Å², on request).
    """
    single = not isinstance(atoms, (list, tuple))
    structures = [atoms] if single else list(atoms)
    if not structures:
        raise ValueError("predict() needs at least one structure")
    periodic = all(bool(np.all(a.get_pbc())) for a in structures)
    if stress is None:
        stress = periodic
    elif stress and not periodic:
        raise ValueError("stress is only defined for fully periodic structures (pbc=True along all three cell vectors)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dtype, device = _model_dtype_device(model)
    energies, forces, stresses, hessians = [], [], [], []
    for start in range(0, len(structures), batch_size):
        chunk = structures[start:start + batch_size]
        graph = to_device(collate([from_ase(a, model.cutoff) for a in chunk]), device, dtype)
        out = energy_forces_stress(model, graph, forces=True, stress=stress)
        energies.append(out[K.ENERGY].detach().cpu().double().numpy())
        counts = graph[K.NUM_ATOMS].tolist()
        forces.extend(torch.split(out[K.FORCES].detach().cpu().double(), counts))
        if stress:
            stresses.append(out[K.STRESS].detach().cpu().double().numpy())
        if hessian:
            for a in chunk:
                g = to_device(from_ase(a, model.cutoff), device, dtype)
                hessians.append(exact_hessian(model, g).cpu().double().numpy())
    result = {"energy": np.concatenate(energies), "forces": [f.numpy() for f in forces]}
    if stress:
        result["stress"] = np.concatenate(stresses)
    if hessian:
        result["hessian"] = hessians
    if single:
        result = {k: (v[0] if k != "energy" else float(v[0])) for k, v in result.items()}
    return result
