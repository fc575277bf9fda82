"""Predictions of a batch and the error sums that losses and metrics are built from.

Losses are weighted mean squared errors over a *global* batch:

    L = w_E <((E - E_ref) / n)^2>_structures + w_F <(F - F_ref)^2>_free force components
      + w_S <(sigma - sigma_ref)^2>_stress components + w_H <(H - H_ref)^2>_sampled Hessian entries
      + w_HH <(H_head - H_ref)^2>_entries of every structure's Hessian block (the Hessian head)
      + w_HE <(H_head v_m - lambda_m v_m)^2>_components, over the k lowest eigenpairs (lambda_m, v_m)
        of each structure's reference Hessian (the head's residual on the soft modes)

Each rank holds part of the global batch; it divides its own sums by the
global counts (summed over ranks) and multiplies by the number of ranks, so
that DDP's gradient average equals the gradient of L over the whole global
batch, exactly as one process with the same batch would compute it.

Hessian entries are sampled: for every structure ``hessian_rows`` rows of its
(3n, 3n) Hessian are chosen at random each step, and each row is one more
backward pass through the forces (graph kept, so the loss trains the second
derivative). Rows of the structures of a batch share a backward pass: the
Hessian is block-diagonal over structures, so the rows do not mix.
"""
from __future__ import annotations

import torch

from molsym.data import keys as K
from molsym.models.derivatives import energy_forces_stress
from molsym.models.threads import policy_threads

# Error sums kept per target: (count, sum |error|, sum error^2), in eV-based units.
TERMS = ("energy", "energy_per_atom", "forces", "stress", "hessian", "hessian_head", "hessian_eigen")
LOSS_TERM = {"energy": "energy_per_atom", "forces": "forces", "stress": "stress", "hessian": "hessian",
             "hessian_head": "hessian_head", "hessian_eigen": "hessian_eigen"}


def uses_head(loss: dict) -> bool:
    """Whether a loss config trains the Hessian head (hessian_head or hessian_eigen weighted)."""
    return loss.get("hessian_head", 0) > 0 or loss.get("hessian_eigen", 0) > 0


def eigen_pairs(loss: dict) -> int:
    """k of the hessian_eigen term of a loss config, 0 when the term weighs nothing."""
    return int(loss.get("hessian_eigen_k", 8)) if loss.get("hessian_eigen", 0) > 0 else 0


def predict_batch(model, batch: dict, *, forces: bool, stress: bool, hessian_rows: int = 0,
                  hessian_head: bool = False, create_graph: bool = False,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Energy (B,), and on request forces (N, 3), stress (B, 3, 3), sampled Hessian rows and
    (``hessian_head``) the Hessian head's (3N, 3N) prediction as ``hessian_head``.

    With ``hessian_rows`` = k > 0 the result also holds ``hessian_rows`` (k, 3N)
    predicted rows and ``hessian_rows_ref`` (k, 3N) the same rows of the
    batch's reference Hessian: row r of draw k is, for each structure, one
    row of that structure's block chosen with ``generator``.
    """
    need_graph = create_graph or hessian_rows > 0
    batch = dict(batch)
    positions = batch[K.POSITIONS].detach().requires_grad_(forces or hessian_rows > 0)
    batch[K.POSITIONS] = positions
    with policy_threads(batch):  # the package's thread policy for the forward pass and forces
        out = energy_forces_stress(model, batch, forces=forces or hessian_rows > 0, stress=stress,
                                   create_graph=need_graph, heads=("hessian",) if hessian_head else ())
    if hessian_head:
        out = dict(out)
        out["hessian_head"] = out.pop(K.HESSIAN)
    if hessian_rows > 0:
        rows, rows_ref = _hessian_rows(out, positions, batch, hessian_rows, generator, create_graph)
        out = dict(out)
        out["hessian_rows"], out["hessian_rows_ref"] = rows, rows_ref
    return out


def _hessian_rows(out, positions, batch, draws: int, generator, create_graph: bool):
    gradient = -out[K.FORCES].reshape(-1)  # dE/dx, (3N,)
    num_atoms = batch[K.NUM_ATOMS]
    starts = 3 * (torch.cumsum(num_atoms, 0) - num_atoms)
    predicted, reference = [], []
    target = batch[K.HESSIAN]
    for _ in range(draws):
        offsets = (torch.rand(num_atoms.shape, generator=generator) * (3 * num_atoms).cpu()).long()
        rows = starts + offsets.to(starts.device)
        selector = torch.zeros_like(gradient)
        selector[rows] = 1.0
        row = None
        if gradient.requires_grad:  # False only when no atom has a neighbour
            (row,) = torch.autograd.grad(gradient, positions, grad_outputs=selector, create_graph=create_graph,
                                         retain_graph=True, allow_unused=True)
        row = torch.zeros_like(positions) if row is None else row
        predicted.append(row.reshape(-1))
        reference.append(target.index_select(0, rows).sum(0))
    return torch.stack(predicted), torch.stack(reference)


def error_sums(predicted: dict, batch: dict, *, mask_fixed: bool,
               eigen_pairs: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per target present in both: (count, sum |err|, sum err^2) as 0-d tensors (the square keeps its graph).

    energy: per structure (eV); energy_per_atom: (E - E_ref) / n (eV/atom);
    forces: components of free atoms (eV/Å) (all atoms when ``mask_fixed`` is
    false or the batch has no ``fixed``); stress: components (eV/Å³);
    hessian: entries of the sampled rows inside each structure's block (eV/Å²);
    hessian_head: entries of the head's blocks (eV/Å²); hessian_eigen (``eigen_pairs`` = k > 0):
    components of the head's residuals H v_m - lambda_m v_m on the k lowest eigenpairs of each
    structure's reference block (eV/Å², see :func:`eigen_residuals`).
    """
    sums = {}
    if K.ENERGY in batch and K.ENERGY in predicted:
        error = predicted[K.ENERGY] - batch[K.ENERGY]
        per_atom = error / batch[K.NUM_ATOMS].to(error.dtype)
        sums["energy"] = _sums(error, error.numel())
        sums["energy_per_atom"] = _sums(per_atom, per_atom.numel())
    if K.FORCES in batch and K.FORCES in predicted:
        error = predicted[K.FORCES] - batch[K.FORCES]
        if mask_fixed and K.FIXED in batch:
            error = error[~batch[K.FIXED]]
        sums["forces"] = _sums(error, error.numel())
    if K.STRESS in batch and K.STRESS in predicted:
        error = predicted[K.STRESS] - batch[K.STRESS]
        sums["stress"] = _sums(error, error.numel())
    if "hessian_rows" in predicted:
        error = predicted["hessian_rows"] - predicted["hessian_rows_ref"]
        count = predicted["hessian_rows"].shape[0] * 3 * int(batch[K.NUM_ATOMS].sum())
        # entries outside each row's own block are zero in both, so they add nothing to the sums
        sums["hessian"] = _sums(error, count)
    if "hessian_head" in predicted and K.HESSIAN in batch:
        # both are block-diagonal over structures: entries outside the blocks are zero in both
        error = predicted["hessian_head"] - batch[K.HESSIAN]
        count = int((3 * batch[K.NUM_ATOMS]).pow(2).sum())
        sums["hessian_head"] = _sums(error, count)
        if eigen_pairs > 0:
            residual = eigen_residuals(predicted["hessian_head"], batch[K.HESSIAN], batch[K.NUM_ATOMS], eigen_pairs)
            sums["hessian_eigen"] = _sums(residual, residual.numel())
    return sums


def eigen_residuals(predicted: torch.Tensor, reference: torch.Tensor, num_atoms: torch.Tensor, k: int) -> torch.Tensor:
    """Residuals H v_m - lambda_m v_m (eV/Å²) of ``predicted`` on the ``k`` lowest eigenpairs
    (lambda_m, v_m) of each structure's block of ``reference`` (both (3N, 3N), block-diagonal over
    the structures of the batch; min(k, 3n) pairs for a structure of n atoms), flattened: the sum
    over structures of 3n x min(k, 3n) components.

    The residual vanishes exactly when v_m is an eigenvector of ``predicted`` with eigenvalue
    lambda_m, so the term weighs the soft modes (the reaction coordinate, low frequencies) that
    an entry-wise MSE dominated by stiff bonds neglects. The reference's eigenpairs carry no
    gradient; the lowest include its near-zero rigid-body modes (teaching translational and
    rotational invariance) and, at a transition state, the negative mode.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of eigenpairs must be a positive integer, got {k!r}")
    parts, start = [], 0
    for n in num_atoms.tolist():
        stop = start + 3 * n
        block = reference[start:stop, start:stop].detach()
        values, vectors = torch.linalg.eigh(0.5 * (block + block.transpose(0, 1)))
        m = min(k, 3 * n)
        values, vectors = values[:m], vectors[:, :m]
        parts.append((predicted[start:stop, start:stop] @ vectors - vectors * values).reshape(-1))
        start = stop
    return torch.cat(parts) if parts else predicted.new_zeros(0)


def _sums(error: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    count_t = torch.tensor(float(count), dtype=torch.float64, device=error.device)
    return count_t, error.detach().abs().sum().double(), error.pow(2).sum()


def weighted_loss(sums: dict, weights: dict, global_counts: dict[str, float], world_size: int) -> torch.Tensor:
    """This rank's share of the global weighted MSE (see the module docstring)."""
    loss = None
    for name, term in LOSS_TERM.items():
        weight = weights.get(name, 0.0)  # an absent term weighs nothing
        if weight <= 0 or term not in sums or global_counts.get(term, 0) <= 0:
            continue
        part = weight * world_size * sums[term][2] / global_counts[term]
        loss = part if loss is None else loss + part
    if loss is None:
        raise ValueError("no loss term applies to this batch: the data carry none of the weighted targets "
                         f"(weights {weights})")
    return loss

