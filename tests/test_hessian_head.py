"""The HIP Hessian head on every family and mixed stack of the registry (conftest.MODEL_CONFIGS).

Specifications (float64): H symmetric (H_ji = H_ij^T, to rounding), H(Rx + t) = R H(x) R^T
blockwise for proper and improper R and H(Px) = P H P^T to 1e-12 of max |H| (measured: 1e-15;
float64 rounding through a few hundred operations), zero beyond the head's cutoff and vanishing there as (r_c - r)^3 (the envelope
has zero first and second derivatives at r_c), the translational sum rule exact with
``sum_rule``, batches block-diagonal and equal to one-by-one, and the head saved with checkpoints.
Models are built with float64 as torch's default dtype: e3nn computes its Wigner-3j constants in
the default dtype, and a model built in float32 and cast keeps their float32 rounding (then the
equivariance error is ~1e-9 of max |H|).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import molsym
from molsym import testing
from molsym.data import keys as K
from molsym.heads.hessian import HessianHead
from conftest import bpa_frames, make_model, periodic_copper

pytestmark = pytest.mark.usefixtures("float64_default")
HEAD = {"hessian": {"cutoff": 4.0, "channels": 4}}


def head_model(name, **settings):
    return make_model(name, heads={"hessian": {**HEAD["hessian"], **settings}})


def head_hessian(model, atoms) -> torch.Tensor:
    return model(molsym.from_ase(atoms, model.cutoff, torch.float64), heads=("hessian",))["hessian"].detach()


def test_head_is_symmetric_equivariant_and_nontrivial(family_name):
    model = head_model(family_name)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff, torch.float64)
    h = model(graph, heads=("hessian",))["hessian"].detach()
    assert h.shape == (81, 81)
    scale = float(h.abs().max())
    assert scale > 1e-4, "the head's output is too small for the equivariance test to mean anything"
    assert float((h - h.T).abs().max()) <= 1e-15 * scale
    blocks = h.reshape(27, 3, 27, 3).permute(0, 2, 1, 3)
    antisymmetric = blocks - blocks.transpose(-1, -2)
    assert float(antisymmetric.abs().max()) > 1e-6 * scale  # pair blocks carry a 1e part
    testing.assert_hessian_head_equivariant(model, graph, tolerance=1e-12 * scale)


def test_head_sum_rule_is_exact(family_name):
    model = head_model(family_name, sum_rule=True)
    graph = molsym.from_ase(bpa_frames(1)[0], model.cutoff, torch.float64)
    h = model(graph, heads=("hessian",))["hessian"].detach()
    scale = float(h.abs().max())
    assert scale > 1e-4
    row_sums = h.reshape(81, 27, 3).sum(1)
    assert float(row_sums.abs().max()) < 1e-13 * scale * 27
    assert float((h - h.T).abs().max()) <= 1e-15 * scale
    testing.assert_hessian_head_equivariant(model, graph, tolerance=1e-12 * scale, trials=2)


def test_pairs_beyond_the_head_cutoff_are_zero():
    model = head_model("tensornet", cutoff=2.0)
    atoms = bpa_frames(1)[0]
    h = head_hessian(model, atoms).reshape(27, 3, 27, 3).permute(0, 2, 1, 3).numpy()
    distances = atoms.get_all_distances()
    norms = np.abs(h).max(axis=(2, 3))
    off_diagonal = ~np.eye(27, dtype=bool)
    assert np.all(norms[off_diagonal & (distances >= 2.0)] == 0.0)
    assert np.all(norms[off_diagonal & (distances < 2.0)] > 0.0)
    assert np.all(norms[~off_diagonal] > 0.0)


def test_pair_block_vanishes_smoothly_at_the_cutoff():
    """A C-O pair approaching the head's cutoff r_c from inside: |H_CO| ~ (r_c - r)^3."""
    model = head_model("e3nn", cutoff=3.0)
    sizes = []
    for gap in (2e-2, 1e-2, 5e-3):
        atoms = Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.3, 0.4, 3.0]])
        atoms.positions[1] *= (3.0 - gap) / np.linalg.norm(atoms.positions[1])
        sizes.append(float(head_hessian(model, atoms)[:3, 3:].abs().max()))
    ratios = [sizes[0] / sizes[1], sizes[1] / sizes[2]]
    assert all(abs(r - 8.0) < 0.5 for r in ratios), ratios


def test_periodic_cell_with_self_images():
    """A small Cu cell: pairs with their own periodic images add onto the diagonal blocks."""
    model = head_model("tensornet+e3nn", sum_rule=True)
    crystal = periodic_copper(repeat=1, shear=0.1)
    h = head_hessian(model, crystal)
    n = len(crystal)
    scale = float(h.abs().max())
    assert float((h - h.T).abs().max()) <= 1e-15 * scale
    assert float(h.reshape(3 * n, n, 3).sum(1).abs().max()) < 1e-13 * scale * n
    graph = molsym.from_ase(crystal, model.cutoff, torch.float64)
    rotation = testing.random_orthogonal(parity=True, generator=torch.Generator().manual_seed(1))
    rotated = model(testing.transform_graph(graph, rotation), heads=("hessian",))["hessian"].detach()
    assert float((rotated - testing.rotate_blocks(h, rotation)).abs().max()) < 1e-12 * scale


def test_batch_is_block_diagonal_and_equals_one_by_one():
    model = head_model("e3nn")
    structures = [molecule("H2O"), molecule("CH3CH2OH"), bpa_frames(1)[0]]
    batch = molsym.collate([molsym.from_ase(a, model.cutoff, torch.float64) for a in structures])
    h = model(batch, heads=("hessian",))["hessian"].detach()
    start = 0
    for atoms in structures:
        n3 = 3 * len(atoms)
        alone = head_hessian(model, atoms)
        torch.testing.assert_close(h[start:start + n3, start:start + n3], alone, rtol=0, atol=1e-12)
        assert int(torch.count_nonzero(h[start:start + n3, start + n3:])) == 0
        start += n3


def test_energy_is_unchanged_by_a_head():
    plain = make_model("tensornet")
    with_head = head_model("tensornet")
    graph = molsym.from_ase(bpa_frames(1)[0], plain.cutoff, torch.float64)
    out = with_head(graph, heads=("hessian",))
    assert torch.equal(out[K.ENERGY], plain(graph)[K.ENERGY])
    assert set(plain.state_dict()) < set(with_head.state_dict())
    assert all(k.startswith("heads.hessian.") for k in set(with_head.state_dict()) - set(plain.state_dict()))


def test_representation_is_the_canonical_form(family_name):
    model = make_model(family_name)
    graph = molsym.from_ase(molecule("CH3CH2OH"), model.cutoff, torch.float64)
    representation = model.representation(graph)
    assert representation.features.shape == (9, 12, model.feature_forms[-1].channels)
    assert torch.equal(representation.species, model.species(graph[K.ATOMIC_NUMBERS]))
    assert representation.geometry.pair_index.shape[0] == 2


def test_head_checkpoint_round_trip(tmp_path):
    model = head_model("tensornet+e3nn", sum_rule=True)
    path = tmp_path / "head.pt"
    molsym.save(model, path)
    loaded = molsym.load(path)
    assert loaded.config["heads"] == model.config["heads"]
    assert loaded.config["heads"]["hessian"] == {"cutoff": 4.0, "channels": 4, "num_radial": 8, "radial_hidden": 32,
                                                 "avg_num_neighbors": 10.0, "sum_rule": True}
    atoms = bpa_frames(1)[0]
    assert torch.equal(head_hessian(loaded, atoms), head_hessian(model, atoms))


def test_a_missing_head_is_refused_with_the_config_key():
    model = make_model("tensornet")
    graph = molsym.from_ase(molecule("H2O"), model.cutoff, torch.float64)
    with pytest.raises(ValueError, match=r"no 'hessian' head .*heads: \{'hessian'"):
        model(graph, heads=("hessian",))


def test_a_half_edge_list_is_refused():
    model = head_model("tensornet")
    graph = molsym.from_ase(molecule("H2O"), model.cutoff, torch.float64)
    i, j = graph[K.EDGE_INDEX]
    keep = i < j
    graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT] = graph[K.EDGE_INDEX][:, keep], graph[K.EDGE_SHIFT][keep]
    with pytest.raises(ValueError, match="full neighbour list"):
        model(graph, heads=("hessian",))


@pytest.mark.parametrize("heads, message", [
    ({"hesian": {}}, r"heads: unknown head 'hesian' \(did you mean 'hessian'\?\)"),
    ({"hessian": {"cutof": 3.0}}, r"heads.hessian: unknown key 'cutof' \(did you mean 'cutoff'\?\)"),
    ({"hessian": {"cutoff": 6.0}}, r"heads.hessian: 'cutoff' 6.0 exceeds the model's cutoff 4.5"),
    ({"hessian": {"channels": 0}}, r"heads.hessian: 'channels' must be a positive integer"),
    ({"hessian": {"sum_rule": "yes"}}, r"heads.hessian: 'sum_rule' must be true or false"),
    ({"hessian": [1]}, r"heads.hessian must be a mapping"),
    (["hessian"], r"'heads' must map head names to settings"),
])
def test_head_config_errors_name_the_key(heads, message):
    with pytest.raises((ValueError, TypeError), match=message):
        molsym.Potential.from_config({"elements": [1, 8], "heads": heads})


def test_head_defaults_fill_the_config():
    model = molsym.Potential.from_config({"elements": [1, 8], "cutoff": 5.0, "channels": 8, "heads": {"hessian": None}})
    assert model.config["heads"]["hessian"]["cutoff"] == 5.0
    assert isinstance(model.heads["hessian"], HessianHead)
    assert molsym.Potential.from_config({"elements": [1, 8]}).config["heads"] == {}
