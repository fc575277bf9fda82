"""Self-distillation: teach a potential's Hessian head the potential's own exact Hessians.

The exact (autograd) Hessian of N atoms costs 3N / chunk batched backward passes; a HIP head
(``molsym.heads.hessian``) predicts it in one forward pass. :func:`distil_hessian_head` gives a
trained potential such a head for its own energy surface: the labels are the potential's exact
float64 Hessians of the given structures, the backbone (and so the energy surface) is frozen,
and only the head's parameters are trained, on the mean squared error of every Hessian entry
(eV/Å²)^2, with AdamW and a cosine schedule. The energies and forces of the returned potential
equal the teacher's; what the head is worth has to be measured on structures it did not see
(:func:`hessian_head_errors`).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from molsym.heads.hessian import HessianHeadSettings


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def exact_hessians(model, structures) -> list[torch.Tensor]:
    """The exact Hessians (3N, 3N) eV/Å² of ``structures`` (ase.Atoms) by ``model`` in float64."""
    import copy

    from molsym.data.graph import from_ase
    from molsym.models.derivatives import hessian

    teacher = copy.deepcopy(model).double().eval()
    return [hessian(teacher, from_ase(atoms, teacher.cutoff, torch.float64)) for atoms in structures]


def distil_hessian_head(model, structures, *, head: dict | None = None, labels=None, epochs: int = 60,
                        batch: int = 4, lr: float = 5e-3, max_seconds: float | None = None, seed: int = 0,
                        progress: Callable[[dict], None] | None = None):
    """A copy of ``model`` (float64, eval mode) with a Hessian head taught ``model``'s exact Hessians.

    structures: ase.Atoms (any number of atoms each); labels: their Hessians if already computed
    (default: :func:`exact_hessians`). head: settings of the new head
    (:class:`~molsym.heads.hessian.HessianHeadSettings` keys; default 32 channels, the model's
    cutoff); an existing head of ``model`` is replaced. Training: ``epochs`` passes over the
    structures in shuffled batches of ``batch`` (seeded by ``seed``), AdamW (lr, weight decay
    5e-7, amsgrad), cosine from ``lr`` to 1e-5 over all steps, stopped early after
    ``max_seconds``. ``progress`` receives {"epoch", "mse", "seconds"} after every epoch.
    """
    import molsym
    from molsym.data.graph import collate, from_ase

    structures = list(structures)
    if not structures:
        raise ValueError("distil_hessian_head needs at least one structure")
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch", batch)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    settings = {"channels": 32, **(head or {})}
    try:
        HessianHeadSettings(**settings).resolved(model.cutoff)  # bad values are refused here, not mid-training
    except TypeError as error:
        raise ValueError(f"unknown Hessian head setting in {sorted(settings)}: {error}") from None
    if labels is None:
        labels = exact_hessians(model, structures)
    labels = [torch.as_tensor(h, dtype=torch.float64) for h in labels]
    if len(labels) != len(structures):
        raise ValueError(f"{len(labels)} Hessians for {len(structures)} structures")
    for k, (atoms, h) in enumerate(zip(structures, labels)):
        if h.shape != (3 * len(atoms), 3 * len(atoms)):
            raise ValueError(f"Hessian {k} has shape {tuple(h.shape)}, expected {(3 * len(atoms),) * 2}")
        if not torch.isfinite(h).all():
            raise ValueError(f"Hessian {k} has non-finite entries")

    torch.manual_seed(seed)
    config = {**model.config, "heads": {**model.config.get("heads", {}), "hessian": settings}}
    student = molsym.Potential.from_config(config).double()
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.hessian.")}
    missing, unexpected = student.load_state_dict(backbone, strict=False)
    if unexpected or not all(k.startswith("heads.hessian.") for k in missing):
        raise RuntimeError(f"the student does not hold the model's weights: missing {missing}, unexpected {unexpected}")
    trained = []
    for name, parameter in student.named_parameters():
        parameter.requires_grad_(name.startswith("heads.hessian."))
        if parameter.requires_grad:
            trained.append(parameter)
    graphs = [from_ase(atoms, student.cutoff, torch.float64) for atoms in structures]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=5e-7, amsgrad=True)
    steps = math.ceil(len(graphs) / batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps, eta_min=min(1e-5, lr))
    generator = torch.Generator().manual_seed(seed)
    student.train()
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(graphs), generator=generator).tolist()
        total = 0.0
        for first in range(0, len(order), batch):
            ids = order[first:first + batch]
            predicted = student(collate([graphs[i] for i in ids]), heads=("hessian",))["hessian"]
            target = torch.block_diag(*[labels[i] for i in ids])
            mask = torch.block_diag(*[torch.ones_like(labels[i]) for i in ids])
            loss = ((predicted - target) * mask).pow(2).sum() / mask.sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite Hessian loss in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        if progress is not None:
            progress({"epoch": epoch + 1, "mse": total / steps, "seconds": time.perf_counter() - started})
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    return student.eval()


def hessian_head_errors(student, structures, labels=None) -> dict:
    """Mean absolute error (eV/Å²) of the head against ``labels`` (default: the student's own
    exact Hessians), the labels' mean |H|, and the MAE (cm^-1) of the 3N - 6 (5) projected
    frequencies, over ``structures``."""
    import numpy as np

    from molsym.analysis import vibrations_from_hessian
    from molsym.data.graph import from_ase

    structures = list(structures)
    if labels is None:
        labels = exact_hessians(student, structures)
    errors, scale, frequency_errors = [], [], []
    with torch.no_grad():
        for atoms, reference in zip(structures, labels):
            reference = torch.as_tensor(reference, dtype=torch.float64)
            graph = from_ase(atoms, student.cutoff, next(student.parameters()).dtype)
            predicted = student(graph, heads=("hessian",))["hessian"].double()
            errors.append((predicted - reference).abs().flatten().numpy())
            scale.append(float(reference.abs().mean()))
            f_pred = vibrations_from_hessian(predicted.numpy(), atoms).frequencies
            f_ref = vibrations_from_hessian(reference.numpy(), atoms).frequencies
            frequency_errors.append(np.abs(f_pred - f_ref))
    return {"hessian_mae_ev_a2": float(np.concatenate(errors).mean()), "mean_abs_hessian_ev_a2": float(np.mean(scale)),
            "frequency_mae_cm1": float(np.concatenate(frequency_errors).mean())}
