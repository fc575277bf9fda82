"""Physics assertions shared by every family's tests (shipped, so users can test their own models).

Each function takes a model (``graph dict -> {"energy", "energies"}``) and a
graph dict (``molsym.data.keys``), and raises AssertionError with the measured
error when the property does not hold within the tolerance.
"""
from __future__ import annotations

import numpy as np
import torch

from molsym.data import keys as K
from molsym.models.derivatives import energy_forces_stress, hessian
from molsym.o3.wigner import wigner_blocks


def random_orthogonal(dtype=torch.float64, parity: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random 3x3 rotation (Haar), times -1 when ``parity`` (an improper rotation)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=generator))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if parity:
        q = -q
    return q.to(dtype)


def rotate_spherical(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Act with the O(3) element ``rotation`` on spherical features x (N, S, (L+1)^2, C): degree l
    of parity class s gets D^l(det R R) det(R)^(l + s) (e3nn's convention)."""
    det = float(torch.det(rotation))
    lmax = int(round(x.shape[2] ** 0.5)) - 1
    blocks = wigner_blocks((rotation * det).to(x.dtype).unsqueeze(0), lmax)
    return torch.stack([torch.cat([torch.einsum("ij,njc->nic", d[0], x[:, s, l * l:(l + 1) ** 2]) * det ** (l + s)
                                   for l, d in enumerate(blocks)], dim=1) for s in range(x.shape[1])], dim=1)


def across_threads(function, counts=(1, 2)) -> list:
    """``function()`` evaluated with each number of intra-op threads in ``counts`` (the previous
    number restored afterwards): for checks that results do not depend on the thread count."""
    previous = torch.get_num_threads()
    try:
        results = []
        for count in counts:
            torch.set_num_threads(count)
            results.append(function())
        return results
    finally:
        torch.set_num_threads(previous)


def transform_graph(graph: dict, rotation: torch.Tensor, translation: torch.Tensor | None = None) -> dict:
    """Apply x -> R x + t to positions, and R to cell vectors and lattice shifts."""
    out = dict(graph)
    rt = rotation.T.to(graph[K.POSITIONS].dtype)
    out[K.POSITIONS] = graph[K.POSITIONS] @ rt
    if translation is not None:
        out[K.POSITIONS] = out[K.POSITIONS] + translation.to(out[K.POSITIONS].dtype)
    out[K.CELL] = graph[K.CELL] @ rt
    out[K.EDGE_SHIFT] = graph[K.EDGE_SHIFT] @ rt
    return out


def permute_graph(graph: dict, permutation: torch.Tensor) -> dict:
    """Relabel atoms: new atom k is old atom ``permutation[k]``; edges relabelled to match."""
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(permutation.numel())
    out = dict(graph)
    for key in (K.POSITIONS, K.ATOMIC_NUMBERS, K.BATCH):
        out[key] = graph[key].index_select(0, permutation)
    out[K.EDGE_INDEX] = inverse[graph[K.EDGE_INDEX]]
    return out


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max()) if a.numel() else 0.0


def assert_equivariant(model, graph: dict, tolerance: float, *, stress: bool = False, trials: int = 3, seed: int = 0):
    """Energy invariant, forces (and stress) equivariant under random O(3) x translations.

    Checks E(Rx+t) = E(x), F(Rx+t) = R F(x) and sigma(Rx+t) = R sigma R^T for
    proper and improper rotations; max absolute error must be < ``tolerance``.
    """
    gen = torch.Generator().manual_seed(seed)
    ref = energy_forces_stress(model, graph, stress=stress)
    dtype = graph[K.POSITIONS].dtype
    for trial in range(trials):
        rotation = random_orthogonal(dtype, parity=bool(trial % 2), generator=gen)
        translation = 10.0 * torch.randn(3, dtype=torch.float64, generator=gen)
        out = energy_forces_stress(model, transform_graph(graph, rotation, translation), stress=stress)
        errors = {
            "energy": _max_abs(out[K.ENERGY], ref[K.ENERGY]),
            "forces": _max_abs(out[K.FORCES], ref[K.FORCES] @ rotation.T),
        }
        if stress:
            errors["stress"] = _max_abs(out[K.STRESS], rotation @ ref[K.STRESS] @ rotation.T)
        worst = max(errors, key=errors.get)
        assert errors[worst] < tolerance, (
            f"not O(3)-equivariant (det R = {float(torch.det(rotation)):+.0f}): max |error| in {worst} "
            f"= {errors[worst]:.3e} >= {tolerance:.1e}; all: {errors}"
        )


def assert_permutation_equivariant(model, graph: dict, tolerance: float, seed: int = 0):
    """Permuting atoms leaves energies unchanged and permutes forces and atomic energies."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(graph[K.POSITIONS].shape[0], generator=gen)
    ref = energy_forces_stress(model, graph)
    out = energy_forces_stress(model, permute_graph(graph, perm))
    errors = {
        "energy": _max_abs(out[K.ENERGY], ref[K.ENERGY]),
        "energies": _max_abs(out[K.ATOMIC_ENERGIES], ref[K.ATOMIC_ENERGIES][perm]),
        "forces": _max_abs(out[K.FORCES], ref[K.FORCES][perm]),
    }
    worst = max(errors, key=errors.get)
    assert errors[worst] < tolerance, f"not permutation-equivariant: {worst} error {errors[worst]:.3e}; all: {errors}"


def _displaced(graph: dict, atom: int, component: int, delta: float) -> dict:
    """A copy of ``graph`` with one Cartesian coordinate moved by ``delta`` Å."""
    out = dict(graph)
    out[K.POSITIONS] = graph[K.POSITIONS].clone()
    out[K.POSITIONS][atom, component] += delta
    return out


def _energy(model, graph) -> float:
    with torch.no_grad():
        return float(model(graph)[K.ENERGY].sum())


def assert_forces_match_fd(model, graph: dict, *, step: float = 1e-4, rtol: float = 1e-6, atoms=None):
    """Forces equal central finite differences of the energy (float64 graph).

    Relative error = max |F - F_fd| / max |F|, F_fd = -(E(x+h) - E(x-h)) / 2h;
    the edge list is kept fixed (the smooth cutoff makes that exact to O(h^2)).
    """
    if graph[K.POSITIONS].dtype != torch.float64:
        raise ValueError("finite-difference checks need a float64 graph")
    forces = energy_forces_stress(model, graph)[K.FORCES].detach()
    indices = range(forces.shape[0]) if atoms is None else atoms
    fd = torch.zeros_like(forces)
    for a in indices:
        for c in range(3):
            plus, minus = _displaced(graph, a, c, step), _displaced(graph, a, c, -step)
            fd[a, c] = -(_energy(model, plus) - _energy(model, minus)) / (2 * step)
    sel = torch.as_tensor(list(indices))
    scale = float(forces[sel].abs().max())
    error = float((forces[sel] - fd[sel]).abs().max()) / max(scale, 1e-12)
    assert error < rtol, f"forces differ from finite differences: relative error {error:.3e} >= {rtol:.1e}"
    return error


def assert_hessian_matches_fd(model, graph: dict, *, step: float = 1e-4, rtol: float = 1e-6):
    """Exact Hessian is symmetric and equals central finite differences of the forces."""
    if graph[K.POSITIONS].dtype != torch.float64:
        raise ValueError("finite-difference checks need a float64 graph")
    h = hessian(model, graph)
    scale = float(h.abs().max())
    asym = float((h - h.T).abs().max()) / max(scale, 1e-12)
    assert asym < 1e-10, f"Hessian not symmetric: relative asymmetry {asym:.3e}"
    n = graph[K.POSITIONS].shape[0]
    fd = torch.zeros_like(h)
    for a in range(n):
        for c in range(3):
            plus, minus = _displaced(graph, a, c, step), _displaced(graph, a, c, -step)
            f_plus = energy_forces_stress(model, plus)[K.FORCES].detach().reshape(-1)
            f_minus = energy_forces_stress(model, minus)[K.FORCES].detach().reshape(-1)
            fd[3 * a + c] = -(f_plus - f_minus) / (2 * step)
    error = float((h - fd).abs().max()) / max(scale, 1e-12)
    assert error < rtol, f"Hessian differs from finite differences of forces: relative error {error:.3e} >= {rtol:.1e}"
    return error


def assert_stress_matches_fd(model, graph: dict, *, step: float = 1e-5, atol: float = 1e-6):
    """Stress (eV/Å³) equals central finite differences of E under symmetric strain, / volume.

    Mirrors ``ase.calculators.fd.calculate_numerical_stress``: cell and
    positions deformed by (1 + eps) along each Voigt component.
    """
    if graph[K.POSITIONS].dtype != torch.float64:
        raise ValueError("finite-difference checks need a float64 graph")
    if graph[K.CELL].shape[0] != 1:
        raise ValueError("assert_stress_matches_fd takes a single structure")
    stress = energy_forces_stress(model, graph, stress=True)[K.STRESS][0].detach()
    volume = float(torch.linalg.det(graph[K.CELL][0]).abs())
    fd = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1.0, -1.0):
                eps = torch.zeros(3, 3, dtype=torch.float64)
                eps[a, b] += 0.5 * sign * step
                eps[b, a] += 0.5 * sign * step
                deform = torch.eye(3, dtype=torch.float64) + eps
                g = dict(graph)
                g[K.POSITIONS] = graph[K.POSITIONS] @ deform
                g[K.EDGE_SHIFT] = graph[K.EDGE_SHIFT] @ deform
                g[K.CELL] = graph[K.CELL] @ deform
                energies.append(_energy(model, g))
            fd[a, b] = (energies[0] - energies[1]) / (2 * step * volume)
    error = float((stress - fd).abs().max())
    assert error < atol, f"stress differs from finite differences by {error:.3e} eV/Å³ >= {atol:.1e}"
    return error


def cutoff_crossing_profile(model, atoms, mover: int, direction: np.ndarray, distances: np.ndarray,
                            anchor: int, dtype=torch.float64):
    """Energies (eV) and forces on ``mover`` (eV/Å) as it sits at each distance from ``anchor``.

    The neighbour list is rebuilt at every point, as in MD, so a neighbour
    entering or leaving the cutoff is part of what is measured.
    """
    from molsym.data.graph import from_ase

    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    energies, forces = [], []
    work = atoms.copy()
    for d in distances:
        positions = work.get_positions()
        positions[mover] = positions[anchor] + d * direction
        work.set_positions(positions)
        out = energy_forces_stress(model, from_ase(work, model.cutoff, dtype))
        energies.append(float(out[K.ENERGY].detach().sum()))
        forces.append(out[K.FORCES][mover].detach().numpy().copy())
    return np.asarray(energies), np.asarray(forces)


def assert_smooth_at_cutoff(model, atoms, mover: int, anchor: int, direction, *, step: float = 1e-4,
                            span: float = 0.01, max_jump: float = 1e-6):
    """Moving ``mover`` through the cutoff sphere of ``anchor`` in ``step`` Å steps changes the
    energy (eV) and the forces (eV/Å) by less than ``max_jump`` per step."""
    rc = model.cutoff
    distances = np.arange(rc - span, rc + span + step / 2, step)
    energies, forces = cutoff_crossing_profile(model, atoms, mover, direction, distances, anchor)
    energy_jump = float(np.abs(np.diff(energies)).max())
    force_jump = float(np.abs(np.diff(forces, axis=0)).max())
    assert energy_jump < max_jump, f"energy jumps by {energy_jump:.3e} eV across the cutoff (step {step} Å)"
    assert force_jump < max_jump, f"forces jump by {force_jump:.3e} eV/Å across the cutoff (step {step} Å)"
    return energy_jump, force_jump


def rotate_blocks(hessian: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """R H R^T on every 3x3 block of a (3N, 3N) matrix."""
    n = hessian.shape[0] // 3
    blocks = hessian.reshape(n, 3, n, 3)
    return torch.einsum("ac,icjd,bd->iajb", rotation.to(hessian.dtype), blocks, rotation.to(hessian.dtype)).reshape(
        3 * n, 3 * n)


def assert_hessian_head_equivariant(model, graph: dict, tolerance: float, *, head: str = "hessian", trials: int = 3,
                                    seed: int = 0):
    """A Hessian head's output H (3N, 3N) obeys H(Rx + t) = R H(x) R^T blockwise for random proper and
    improper R and translations t, and H(Px) = P H(x) P^T for a random permutation P of the atoms;
    max absolute error must be < ``tolerance`` (eV/Å²)."""
    gen = torch.Generator().manual_seed(seed)
    ref = model(graph, heads=(head,))[head].detach()
    dtype = graph[K.POSITIONS].dtype
    for trial in range(trials):
        rotation = random_orthogonal(dtype, parity=bool(trial % 2), generator=gen)
        translation = 10.0 * torch.randn(3, dtype=torch.float64, generator=gen)
        out = model(transform_graph(graph, rotation, translation), heads=(head,))[head].detach()
        error = _max_abs(out, rotate_blocks(ref, rotation))
        assert error < tolerance, (f"Hessian head not O(3)-equivariant (det R = {float(torch.det(rotation)):+.0f}): "
                                   f"max |H(Rx) - R H R^T| = {error:.3e} >= {tolerance:.1e}")
    n = graph[K.POSITIONS].shape[0]
    permutation = torch.randperm(n, generator=gen)
    out = model(permute_graph(graph, permutation), heads=(head,))[head].detach()
    rows = (3 * permutation[:, None] + torch.arange(3)).reshape(-1)
    error = _max_abs(out, ref[rows][:, rows])
    assert error < tolerance, f"Hessian head not permutation-equivariant: max |error| = {error:.3e} >= {tolerance:.1e}"
