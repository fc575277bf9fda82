"""Physics every family and every mixed stack must obey (one parametrised module).

Tolerances: float64 equivariance to 1e-10 (round-off of a few hundred
operations on O(1-10) numbers is ~1e-13); float32 to 1e-4 (eps 1.2e-7 times
energies of O(10) eV and accumulation); finite differences with h = 1e-4 Å have
truncation error O(h^2) ~ 1e-8 relative, so 1e-6 is a real check.
"""
from __future__ import annotations

import torch

import molsym
from molsym.data import keys as K
from molsym.models.derivatives import energy_forces_stress
from molsym import testing
from conftest import bpa_frames, make_model, periodic_copper


def graph_of(atoms, model, dtype=torch.float64):
    return molsym.from_ase(atoms, model.cutoff, dtype)


def test_equivariance_float64(family_name, bpa):
    model = make_model(family_name)
    testing.assert_equivariant(model, graph_of(bpa, model), 1e-10)


def test_equivariance_float32(family_name, bpa):
    model = make_model(family_name, dtype=torch.float32)
    testing.assert_equivariant(model, graph_of(bpa, model, torch.float32), 1e-4)


def test_equivariance_periodic_with_stress(family_name):
    model = make_model(family_name)
    testing.assert_equivariant(model, graph_of(periodic_copper(), model), 1e-10, stress=True)


def test_permutation(family_name, bpa):
    model = make_model(family_name)
    testing.assert_permutation_equivariant(model, graph_of(bpa, model), 1e-10)


def test_forces_match_finite_differences(family_name, bpa):
    model = make_model(family_name)
    testing.assert_forces_match_fd(model, graph_of(bpa, model), rtol=1e-6, atoms=range(0, 27, 3))


def test_stress_matches_finite_differences(family_name):
    model = make_model(family_name)
    testing.assert_stress_matches_fd(model, graph_of(periodic_copper(), model), atol=1e-6)


def test_hessian_matches_finite_differences(family_name):
    from ase.build import molecule

    model = make_model(family_name)
    testing.assert_hessian_matches_fd(model, graph_of(molecule("H2CO"), model), rtol=1e-6)


def test_smooth_across_cutoff(family_name):
    from ase.build import molecule

    model = make_model(family_name)
    atoms = molecule("H2O")
    atoms.append("C")
    testing.assert_smooth_at_cutoff(model, atoms, mover=3, anchor=0, direction=[0.3, 0.2, 1.0],
                                    step=1e-4, span=0.003, max_jump=1e-6)


def test_batch_equals_single(family_name):
    from ase.build import molecule

    model = make_model(family_name)
    structures = [bpa_frames(1)[0], molecule("CH3CH2OH"), molecule("H2O"), periodic_copper()]
    singles = [energy_forces_stress(model, graph_of(a, model)) for a in structures]
    batch = energy_forces_stress(model, molsym.collate([graph_of(a, model) for a in structures]))
    counts = [len(a) for a in structures]
    for k, (single, forces) in enumerate(zip(singles, torch.split(batch[K.FORCES], counts))):
        assert abs(float((batch[K.ENERGY][k] - single[K.ENERGY][0]).detach())) < 1e-10
        assert float((forces - single[K.FORCES]).abs().max()) < 1e-10


def test_isolated_atoms_have_reference_energy(family_name):
    from ase import Atoms

    model = make_model(family_name)
    model.set_energy_reference(e0={1: -13.6, 8: -2041.0})
    atoms = Atoms("HO", positions=[[0, 0, 0], [0, 0, 20.0]])
    out = energy_forces_stress(model, graph_of(atoms, model))
    assert float(out[K.FORCES].abs().max()) == 0.0
    # isolated atoms get E0 + the learned self energy, independent of where they are
    moved = atoms.copy()
    moved.positions[1] = [5.0, -7.0, 30.0]
    again = energy_forces_stress(model, graph_of(moved, model))
    assert abs(float((out[K.ENERGY] - again[K.ENERGY]).detach())) < 1e-12
