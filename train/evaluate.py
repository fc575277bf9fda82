"""Evaluation of a model on a dataset: metric sums over ranks and, on request, the predictions for parity plots."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from molsym.data import keys as K
from molsym.data.graph import collate, to_device
from molsym.train.distributed import World
from molsym.train.losses import error_sums, predict_batch
from molsym.train.metrics import MetricSums
from molsym.train.sampler import ShardSampler

# Seed of the Hessian rows drawn when evaluating, so that every evaluation uses the same rows.
EVALUATION_ROWS_SEED = 12345


@dataclass
class Predictions:
    """Reference and predicted values of a split, for parity plots (this rank's structures).

    energy_per_atom_*: (S,) eV/atom; forces_*: (M,) eV/Å, components of free atoms.
    """

    energy_per_atom_ref: list = field(default_factory=list)
    energy_per_atom_pred: list = field(default_factory=list)
    forces_ref: list = field(default_factory=list)
    forces_pred: list = field(default_factory=list)

    def add(self, predicted: dict, batch: dict, mask_fixed: bool) -> None:
        if K.ENERGY in batch:
            atoms = batch[K.NUM_ATOMS].to(batch[K.ENERGY].dtype)
            self.energy_per_atom_ref.append((batch[K.ENERGY] / atoms).detach().cpu().numpy())
            self.energy_per_atom_pred.append((predicted[K.ENERGY] / atoms).detach().cpu().numpy())
        if K.FORCES in batch and K.FORCES in predicted:
            keep = ~batch[K.FIXED] if mask_fixed and K.FIXED in batch else slice(None)
            self.forces_ref.append(batch[K.FORCES][keep].detach().cpu().numpy().reshape(-1))
            self.forces_pred.append(predicted[K.FORCES][keep].detach().cpu().numpy().reshape(-1))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(values) if values else np.zeros(0)
                for name, values in vars(self).items()}


def loader(dataset: Dataset, batch_size: int, world: World, num_workers: int = 0) -> DataLoader:
    """Evaluation loader over this rank's shard of ``dataset``."""
    sampler = ShardSampler(len(dataset), batch_size, world.rank, world.size)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


def evaluate(model, data: DataLoader, *, device, dtype, world: World, targets: dict, hessian_rows: int = 0,
             mask_fixed: bool = True, keep_predictions: bool = False, progress=None, hessian_head: bool = False,
             eigen_pairs: int = 0):
    """Metric sums of ``model`` over ``data`` (summed over ranks), and this rank's predictions if asked.

    ``targets`` says which derivatives to compute: {"forces": bool, "stress": bool}.
    Hessian rows (``hessian_rows`` > 0) are drawn with a fixed seed; ``hessian_head``: also the
    Hessian head's error on batches with a reference Hessian.
    """
    model.eval()
    sums = MetricSums(device)
    predictions = Predictions() if keep_predictions else None
    generator = torch.Generator().manual_seed(EVALUATION_ROWS_SEED)
    iterator = progress(data) if progress is not None else data
    for batch in iterator:
        batch = to_device(batch, device, dtype)
        rows = hessian_rows if K.HESSIAN in batch else 0
        out = predict_batch(model, batch, forces=targets["forces"] and K.FORCES in batch,
                            stress=targets["stress"] and K.STRESS in batch, hessian_rows=rows,
                            hessian_head=hessian_head and K.HESSIAN in batch, create_graph=False, generator=generator)
        sums.add(error_sums(out, batch, mask_fixed=mask_fixed,
                            eigen_pairs=eigen_pairs if hessian_head and K.HESSIAN in batch else 0))
        if predictions is not None:
            predictions.add(out, batch, mask_fixed)
    return sums.reduced(world), predictions
