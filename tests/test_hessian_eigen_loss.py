"""The hessian_eigen loss term: residuals of the Hessian head on the reference's lowest eigenpairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import bpa_frames, make_model
from molsym.data import keys as K
from molsym.data.graph import collate, from_ase
from molsym.models.derivatives import hessian
from molsym.train.losses import TERMS, eigen_residuals, error_sums, predict_batch, weighted_loss
from molsym.train.metrics import MetricSums


def _batch(model, frames):
    graphs = []
    for atoms in frames:
        graph = from_ase(atoms, model.cutoff)
        graph[K.HESSIAN] = hessian(model, graph)
        graphs.append(graph)
    return collate(graphs)


def test_residuals_equal_a_direct_computation_per_structure():
    rng = np.random.default_rng(0)
    blocks_ref, blocks_pred = [], []
    for n in (2, 3):
        a, b = rng.normal(size=(3 * n, 3 * n)), rng.normal(size=(3 * n, 3 * n))
        blocks_ref.append(a + a.T)
        blocks_pred.append(b + b.T)
    reference = torch.block_diag(*map(torch.tensor, blocks_ref))
    predicted = torch.block_diag(*map(torch.tensor, blocks_pred))
    residual = eigen_residuals(predicted, reference, torch.tensor([2, 3]), 4)
    expected = []
    for ref, pred in zip(blocks_ref, blocks_pred):
        values, vectors = np.linalg.eigh(ref)
        expected.append((pred @ vectors[:, :4] - vectors[:, :4] * values[:4]).reshape(-1))
    assert residual.shape == (6 * 4 + 9 * 4,)
    # eigenvectors are defined up to sign: compare the squared sums, which the loss uses, per structure
    assert abs(float(residual[:24].pow(2).sum()) - float(np.sum(expected[0] ** 2))) < 1e-10
    assert abs(float(residual[24:].pow(2).sum()) - float(np.sum(expected[1] ** 2))) < 1e-10
    # k larger than 3n takes every pair; a perfect prediction leaves no residual
    assert eigen_residuals(reference, reference, torch.tensor([2, 3]), 100).abs().max() < 1e-12
    with pytest.raises(ValueError, match="eigenpairs"):
        eigen_residuals(predicted, reference, torch.tensor([2, 3]), 0)


def test_eigen_term_enters_the_loss_and_trains_the_head():
    model = make_model("tensornet", heads={"hessian": {"cutoff": 4.0}})
    batch = _batch(model, bpa_frames(2))
    out = predict_batch(model, batch, forces=True, stress=False, hessian_head=True, create_graph=True)
    sums = error_sums(out, batch, mask_fixed=True, eigen_pairs=6)
    assert "hessian_eigen" in sums and int(sums["hessian_eigen"][0]) == 2 * 81 * 6
    counts = {name: float(sums[name][0]) for name in sums}
    loss = weighted_loss(sums, {"hessian_eigen": 1.0}, counts, 1)
    residual = eigen_residuals(out["hessian_head"], batch[K.HESSIAN], batch[K.NUM_ATOMS], 6)
    assert abs(float(loss.detach()) - float(residual.detach().pow(2).mean())) < 1e-12
    loss.backward()
    grads = [p.grad for name, p in model.named_parameters() if "hessian" in name]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    metrics = MetricSums()
    metrics.add(sums)
    assert "hessian_eigen_mae_mev_a2" in metrics.metrics()
    # sums saved before the term existed load with a zero row for it
    old = MetricSums()
    old.load_state_dict(metrics.state_dict()[:len(TERMS) - 1])
    assert old.values.shape == (len(TERMS), 3)


def test_config_requires_a_head_for_the_eigen_term():
    from molsym.train.config import ConfigError, validate_config

    subset = Path(__file__).resolve().parents[1] / "examples" / "data" / "3bpa_subset.xyz"
    raw = {"data": {"train": subset.name}, "loss": {"hessian_eigen": 1.0, "hessian_eigen_k": 4}}
    with pytest.raises(ConfigError, match="hessian_eigen is positive but the model has no Hessian head"):
        validate_config(raw, base_dir=subset.parent)
    raw["model"] = {"heads": {"hessian": {"cutoff": 4.0}}}
    config = validate_config(raw, base_dir=subset.parent)
    assert config["loss"]["hessian_eigen_k"] == 4
    with pytest.raises(ConfigError, match="hessian_eigen_k"):
        validate_config({**raw, "loss": {"hessian_eigen": 1.0, "hessian_eigen_k": 0}}, base_dir=subset.parent)
