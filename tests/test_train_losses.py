"""Losses, metrics, samplers, LR schedules and the weight average, checked against direct computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import bpa_frames, make_model
from molsym.data import keys as K
from molsym.data.graph import collate, from_ase
from molsym.models.derivatives import energy_forces_stress, hessian
from molsym.train.ema import WeightAverage
from molsym.train.losses import TERMS, error_sums, predict_batch, weighted_loss
from molsym.train.metrics import MetricSums
from molsym.train.sampler import GlobalBatchSampler, ShardSampler
from molsym.train.schedule import LearningRate

WEIGHTS = {"energy": 2.0, "forces": 5.0, "stress": 0.0, "hessian": 0.0}


def _labelled_batch(model, frames, noise=0.0, hessian_labels=False, seed=0):
    """Graphs labelled by ``model`` itself (plus Gaussian noise), so errors are known exactly."""
    rng = np.random.default_rng(seed)
    graphs = []
    for atoms in frames:
        graph = from_ase(atoms, model.cutoff)
        out = energy_forces_stress(model, graph)
        graph[K.ENERGY] = out[K.ENERGY].detach() + noise * torch.tensor(rng.normal(size=1))
        graph[K.FORCES] = out[K.FORCES].detach() + noise * torch.tensor(rng.normal(size=(len(atoms), 3)))
        if hessian_labels:
            graph[K.HESSIAN] = hessian(model, graph)
        graphs.append(graph)
    return collate(graphs)


def test_loss_is_the_weighted_mse_of_energy_per_atom_and_forces():
    model = make_model("tensornet")
    frames = bpa_frames(3)
    batch = _labelled_batch(model, frames, noise=0.1)
    out = predict_batch(model, batch, forces=True, stress=False, create_graph=True)
    sums = error_sums(out, batch, mask_fixed=True)
    counts = {name: float(sums[name][0]) for name in sums}
    loss = weighted_loss(sums, WEIGHTS, counts, world_size=1)
    n = batch[K.NUM_ATOMS].double()
    energy_term = (((out[K.ENERGY] - batch[K.ENERGY]) / n) ** 2).mean()
    forces_term = ((out[K.FORCES] - batch[K.FORCES]) ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float((2.0 * energy_term + 5.0 * forces_term).detach()), rel=1e-12)
    assert loss.requires_grad  # trains the weights through the forces
    metrics = MetricSums()
    metrics.add(sums)
    values = metrics.metrics()
    assert values["forces_rmse_mev_a"] == pytest.approx(1000 * math.sqrt(float(forces_term.detach())), rel=1e-12)
    assert values["energy_mae_mev"] == pytest.approx(1000 * float((out[K.ENERGY] - batch[K.ENERGY]).detach().abs().mean()))
    assert metrics.loss(WEIGHTS) == pytest.approx(float(loss.detach()), rel=1e-12)


def test_fixed_atoms_are_left_out_of_force_errors():
    model = make_model("tensornet")
    batch = _labelled_batch(model, bpa_frames(2))
    fixed = torch.zeros(batch[K.POSITIONS].shape[0], dtype=torch.bool)
    fixed[:10] = True
    batch[K.FIXED] = fixed
    batch[K.FORCES] = batch[K.FORCES].clone()
    batch[K.FORCES][:10] += 100.0  # huge errors on fixed atoms only
    out = predict_batch(model, batch, forces=True, stress=False)
    masked = error_sums(out, batch, mask_fixed=True)["forces"]
    assert float(masked[0]) == 3 * (batch[K.POSITIONS].shape[0] - 10)
    assert float(masked[2]) < 1e-20
    unmasked = error_sums(out, batch, mask_fixed=False)["forces"]
    assert float(unmasked[2]) == pytest.approx(10 * 3 * 100.0**2, rel=1e-9)


def test_sampled_hessian_rows_are_exact_rows():
    """Each sampled row equals the same row of the exact autograd Hessian; a perfect model has zero loss."""
    model = make_model("tensornet")
    frames = bpa_frames(2)
    batch = _labelled_batch(model, frames, hessian_labels=True)
    generator = torch.Generator().manual_seed(0)
    out = predict_batch(model, batch, forces=True, stress=False, hessian_rows=3, create_graph=True,
                        generator=generator)
    exact = hessian(model, batch)
    # the same draws: one row offset per structure and draw, uniform in [0, 3n)
    replay = torch.Generator().manual_seed(0)
    num_atoms = batch[K.NUM_ATOMS]
    starts = 3 * (torch.cumsum(num_atoms, 0) - num_atoms)
    for draw in range(3):
        chosen = starts + (torch.rand(num_atoms.shape, generator=replay) * 3 * num_atoms).long()
        expected = exact.index_select(0, chosen).sum(0)  # one row per structure, blocks do not overlap
        assert torch.allclose(out["hessian_rows"][draw], expected, rtol=0, atol=1e-10)
        assert torch.allclose(out["hessian_rows_ref"][draw], expected, rtol=0, atol=1e-10)
    sums = error_sums(out, batch, mask_fixed=True)
    assert float(sums["hessian"][0]) == 3 * 3 * 27 * 2
    loss = weighted_loss(sums, {"energy": 0, "forces": 0, "stress": 0, "hessian": 1.0},
                         {"hessian": float(sums["hessian"][0])}, 1)
    assert float(loss.detach()) < 1e-20


def test_hessian_loss_trains_the_curvature():
    teacher, student = make_model("tensornet", seed=0), make_model("tensornet", seed=1)
    batch = _labelled_batch(teacher, bpa_frames(1), hessian_labels=True)
    out = predict_batch(student, batch, forces=True, stress=False, hessian_rows=2, create_graph=True,
                        generator=torch.Generator().manual_seed(1))
    sums = error_sums(out, batch, mask_fixed=True)
    loss = weighted_loss(sums, {"energy": 0, "forces": 0, "stress": 0, "hessian": 1.0},
                         {"hessian": float(sums["hessian"][0])}, 1)
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert float(loss.detach()) > 0 and grads and any(g.abs().sum() > 0 for g in grads)


def test_global_batches_are_split_over_ranks_without_loss():
    single = GlobalBatchSampler(23, 6, seed=4)
    ranks = [GlobalBatchSampler(23, 6, rank=r, world_size=2, seed=4) for r in range(2)]
    for epoch in (0, 1):
        for sampler in [single, *ranks]:
            sampler.set_epoch(epoch)
        together = [sorted(a + b) for a, b in zip(*(list(s) for s in ranks))]
        assert together == [sorted(batch) for batch in single]
    single.set_epoch(0)
    first = list(single)
    assert sorted(i for batch in first for i in batch) == list(range(23))
    single.set_epoch(1)
    assert list(single) != first  # reshuffled every epoch
    single.set_epoch(1, start_step=2)
    assert len(list(single)) == len(first) - 2
    shards = [list(ShardSampler(11, 4, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for shard in shards for batch in shard for i in batch) == list(range(11))
    with pytest.raises(ValueError, match="at least the number of processes"):
        GlobalBatchSampler(10, 1, world_size=2)


def _schedule(kind, **options):
    settings = {"type": kind, "factor": 0.5, "patience": 1, "threshold": 0.0, "warmup_epochs": 1,
                "warmup_start": 0.1, "min_lr": 1e-3, "fit_to_budget": True, **options}
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return optimizer, LearningRate(optimizer, settings, lr=1.0, steps_per_epoch=10, epochs=5)


def test_warmup_then_cosine():
    optimizer, schedule = _schedule("cosine")
    values = []
    for _ in range(50):
        values.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    assert values[0] == pytest.approx(0.1) and values[5] == pytest.approx(0.55) and values[10] == pytest.approx(1.0)
    assert values[30] == pytest.approx(1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_plateau_reduces_after_patience_and_state_round_trips():
    optimizer, schedule = _schedule("plateau", warmup_epochs=0)
    for loss in (1.0, 0.5, 0.6, 0.7):
        schedule.report(loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    other_optimizer, other = _schedule("plateau", warmup_epochs=0)
    other.load_state_dict(schedule.state_dict())
    assert other_optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    for _ in range(40):
        schedule.report(10.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # never below min_lr


def test_weight_average():
    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model)
    decay = min(0.9, 2 / 11)
    assert torch.allclose(average.shadow["weight"], decay * start + (1 - decay) * model.weight)
    restored = WeightAverage(model, decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 1 and torch.equal(restored.shadow["weight"], average.shadow["weight"])


def test_metric_names_cover_every_term():
    sums = MetricSums()
    assert sums.values.shape == (len(TERMS), 3) and sums.metrics() == {}
