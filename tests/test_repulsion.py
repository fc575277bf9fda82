"""ZBL repulsion prior: the universal ZBL values, strong repulsion at 0.5 Å, derivatives equal to finite
differences (float64), smoothness at its cutoff, O(3) and permutation symmetry."""
from __future__ import annotations

import math
import re

import ase
import ase.io
import numpy as np
import pytest
import torch

from molsym.data import keys as K
from molsym.data.graph import from_ase
from molsym.models.derivatives import energy_forces_stress
from molsym.nn.repulsion import ZBLRepulsion, covalent_radii, zbl_pair_energy, zbl_screening
from molsym.testing import (assert_equivariant, assert_forces_match_fd, assert_hessian_matches_fd,
                            assert_permutation_equivariant, assert_stress_matches_fd)
from train_helpers import SUBSET


def _universal_zbl(r: float, z1: int, z2: int) -> float:
    """The universal ZBL potential (eV, r in Å) written out by hand as LAMMPS' pair_style zbl states it,
    with e^2/(4 pi eps0) = 14.399645 eV Å."""
    a = 0.46850 / (z1 ** 0.23 + z2 ** 0.23)
    x = r / a
    phi = (0.18175 * math.exp(-3.19980 * x) + 0.50986 * math.exp(-0.94229 * x)
           + 0.28022 * math.exp(-0.40290 * x) + 0.02817 * math.exp(-0.20162 * x))
    return 14.399645 * z1 * z2 / r * phi


@pytest.mark.parametrize("z1, z2, expected", [(1, 1, 5.9132), (6, 6, 119.908), (6, 1, 26.357), (7, 8, 171.848)])
def test_bare_zbl_at_half_an_angstrom(z1, z2, expected):
    """E(0.5 Å): the hand-written formula (to 1e-7: k is written to 8 digits) and its figures to 5 digits."""
    value = float(zbl_pair_energy(torch.tensor([0.5], dtype=torch.float64), torch.tensor([z1]), torch.tensor([z2])))
    assert value == pytest.approx(_universal_zbl(0.5, z1, z2), rel=1e-7)
    assert value == pytest.approx(expected, rel=5e-5)
    bare = 14.399645 * z1 * z2 / 0.5
    assert 0 < value < bare  # screened: below the bare Coulomb repulsion of the nuclei


def test_screening_tends_to_bare_coulomb_and_decays():
    assert float(zbl_screening(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(1.0, abs=1e-12)
    r = torch.tensor([1e-6], dtype=torch.float64)
    assert float(zbl_pair_energy(r, torch.tensor([8]), torch.tensor([8]))) * 1e-6 == pytest.approx(14.3996 * 64, rel=1e-4)
    x = torch.linspace(0, 40, 401, dtype=torch.float64)
    assert bool((zbl_screening(x).diff() < 0).all())


def _dimer(z: int, r: float) -> ase.Atoms:
    return ase.Atoms(numbers=[z, z], positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])


@pytest.mark.parametrize("z, cutoff, at_least", [(6, "covalent", 100.0), (1, "covalent", 1.0), (1, 2.0, 5.0)])
def test_two_atoms_at_half_an_angstrom_are_strongly_repelled(z, cutoff, at_least):
    zbl = ZBLRepulsion(cutoff, elements=[z]).double()
    out = energy_forces_stress(zbl, from_ase(_dimer(z, 0.5), zbl.cutoff, torch.float64))
    forces = out[K.FORCES].detach()
    assert float(out[K.ENERGY].detach()) > at_least
    assert float(forces[1, 0]) > 2 * at_least and float(forces[0, 0]) == pytest.approx(-float(forces[1, 0]))
    assert float(forces[:, 1:].abs().max()) < 1e-12


def _compressed_molecule(scale: float = 0.55) -> ase.Atoms:
    atoms = ase.io.read(SUBSET, index=0)
    atoms.positions *= scale  # bonds of 0.6 - 0.85 Å: deep inside every covalent-radius cutoff
    return atoms


@pytest.mark.parametrize("cutoff", ["covalent", 1.6])
def test_forces_and_hessian_equal_finite_differences(cutoff):
    zbl = ZBLRepulsion(cutoff, elements=[1, 6, 7, 8]).double()
    graph = from_ase(_compressed_molecule(), zbl.cutoff, torch.float64)
    assert float(zbl(graph)[K.ENERGY].detach()) > 10.0
    assert_forces_match_fd(zbl, graph, step=1e-5, rtol=1e-6)
    small = from_ase(_compressed_molecule()[:6], zbl.cutoff, torch.float64)
    assert_hessian_matches_fd(zbl, small, step=1e-5, rtol=1e-6)


def test_stress_equals_finite_differences_in_a_periodic_cell():
    atoms = ase.Atoms("C2H2", positions=[[0, 0, 0], [0.9, 0.1, 0], [0.2, 0.8, 0.3], [1.1, 0.9, 0.7]],
                      cell=[[1.9, 0.1, 0], [0, 2.0, 0.2], [0.1, 0, 1.8]], pbc=True)
    zbl = ZBLRepulsion("covalent", elements=[1, 6]).double()
    assert_stress_matches_fd(zbl, from_ase(atoms, zbl.cutoff, torch.float64), step=1e-6, atol=1e-5)


def test_smooth_at_its_cutoff():
    """At r_c - d the pair's energy, force and curvature vanish as d^3, d^2 and d (so all three are continuous
    through r_c), and are exactly 0 beyond; moving an atom through r_c with the neighbour list rebuilt, as in
    MD, changes nothing abruptly (the bare ZBL of C2 at 1.2 Å is 8.1 eV, what a bare cut would jump by)."""
    from molsym.testing import cutoff_crossing_profile

    for zbl, r_c in ((ZBLRepulsion(1.2, elements=[6]).double(), 1.2),
                     (ZBLRepulsion("covalent", elements=[6]).double(), float(2 * covalent_radii()[6]))):
        d = torch.tensor([1e-3, 1e-4], dtype=torch.float64)
        lengths = (r_c - d).requires_grad_(True)
        carbon = torch.tensor([6, 6])
        energy = zbl.pair_energies(lengths, carbon, carbon)
        (force,) = torch.autograd.grad(energy.sum(), lengths, create_graph=True)
        (curvature,) = torch.autograd.grad(force.sum(), lengths)
        for value, power in ((energy, 3), (force, 2), (curvature, 1)):
            ratio = float(value[0].detach() / value[1].detach())
            assert ratio == pytest.approx(10.0 ** power, rel=0.02), (power, ratio)
        beyond = zbl.pair_energies(torch.tensor([r_c, r_c + 1e-9, r_c + 0.5], dtype=torch.float64),
                                   torch.tensor([6, 6, 6]), torch.tensor([6, 6, 6]))
        assert float(beyond.abs().max()) == 0.0
        distances = r_c + np.array([-1e-4, -1e-5, 1e-5, 1e-4])
        energies, forces = cutoff_crossing_profile(zbl, _dimer(6, 1.0), 1, [1.0, 0.0, 0.0], distances, 0)
        assert np.abs(energies).max() < 1e-9 and np.abs(forces).max() < 1e-5
        assert energies[2:].max() == 0.0 and np.abs(forces[2:]).max() == 0.0


def test_equivariant_and_permutation_invariant():
    zbl = ZBLRepulsion("covalent", elements=[1, 6, 7, 8]).double()
    graph = from_ase(_compressed_molecule(), zbl.cutoff, torch.float64)
    assert_equivariant(zbl, graph, 1e-9)
    assert_permutation_equivariant(zbl, graph, 1e-9)


def test_invalid_settings_are_refused():
    for cutoff in (0.0, -1.0, "vdw", True, None):
        with pytest.raises(ValueError, match="ZBL cutoff must be"):
            ZBLRepulsion(cutoff)
    with pytest.raises(ValueError, match="exceeds the neighbour list's cutoff"):
        ZBLRepulsion(5.0, max_cutoff=4.5)
    with pytest.raises(ValueError, match="exceeds the neighbour list's cutoff"):
        ZBLRepulsion("covalent", elements=[55], max_cutoff=4.5)  # Cs: 2 x 2.44 Å
    assert ZBLRepulsion("covalent", elements=[1, 6], max_cutoff=4.5).cutoff == pytest.approx(1.52)


def test_batches_sum_per_structure():
    zbl = ZBLRepulsion("covalent", elements=[1, 6, 7, 8]).double()
    from molsym.data.graph import collate

    frames = [_compressed_molecule(0.55), _compressed_molecule(0.6)]
    single = [float(zbl(from_ase(a, zbl.cutoff, torch.float64))[K.ENERGY]) for a in frames]
    batch = collate([from_ase(a, zbl.cutoff, torch.float64) for a in frames])
    assert np.allclose(zbl(batch)[K.ENERGY].detach().numpy(), single, rtol=1e-13)


# --- the prior in a model: model config "repulsion" ---------------------------------------------------------

def _models(repulsion=None):
    """A small TensorNet with the prior and the same network without it (same weights)."""
    import molsym

    config = {"elements": [1, 6, 7, 8], "channels": 8, "layers": 1, "num_radial": 8}
    torch.manual_seed(0)
    plain = molsym.Potential.from_config(config).double().eval()
    with_prior = molsym.Potential.from_config({**config, "repulsion": repulsion or {"type": "zbl"}}).double().eval()
    with_prior.load_state_dict(plain.state_dict())  # the prior has no weights: the state dicts match
    return plain, with_prior


def test_model_energy_is_the_network_plus_the_prior():
    plain, with_prior = _models()
    assert with_prior.config["repulsion"] == {"type": "zbl", "cutoff": "covalent"}
    graph = from_ase(_compressed_molecule(0.6), plain.cutoff, torch.float64)
    prior = ZBLRepulsion("covalent", elements=[1, 6, 7, 8]).double()(graph)
    got, want = with_prior(graph), plain(graph)
    assert torch.allclose(got[K.ATOMIC_ENERGIES], want[K.ATOMIC_ENERGIES] + prior[K.ATOMIC_ENERGIES], rtol=1e-12)
    assert float((got[K.ENERGY] - want[K.ENERGY]).detach()) > 10.0
    assert_forces_match_fd(with_prior, graph, step=1e-5, rtol=1e-6)


def test_model_with_the_prior_repels_two_atoms_and_round_trips_a_checkpoint(tmp_path):
    import molsym

    plain, with_prior = _models({"type": "zbl", "cutoff": 2.0})
    dimer = from_ase(_dimer(6, 0.5), plain.cutoff, torch.float64)
    push = energy_forces_stress(with_prior, dimer)[K.FORCES][1, 0] - energy_forces_stress(plain, dimer)[K.FORCES][1, 0]
    assert float(push.detach()) > 100.0
    molsym.save(with_prior, tmp_path / "m.pt")
    loaded = molsym.load(tmp_path / "m.pt").double()
    assert loaded.config["repulsion"] == {"type": "zbl", "cutoff": 2.0}
    assert torch.allclose(loaded(dimer)[K.ENERGY], with_prior(dimer)[K.ENERGY], rtol=1e-12)


@pytest.mark.parametrize("repulsion, message", [
    ({"type": "lj"}, "'repulsion.type' must be 'zbl'"),
    ({"type": "zbl", "cutof": 1.0}, "unknown key(s) ['cutof']"),
    ({"type": "zbl", "cutoff": 6.0}, "exceeds the neighbour list's cutoff 4.5"),
    ({"type": "zbl", "cutoff": -1}, "ZBL cutoff must be a positive distance"),
    ("zbl", "must be null or a mapping"),
])
def test_model_config_refuses_bad_repulsion(repulsion, message):
    import molsym

    with pytest.raises(ValueError, match=re.escape(message)):
        molsym.Potential.from_config({"elements": [1, 6], "repulsion": repulsion})


def test_trains_with_the_prior(tmp_path):
    """model.repulsion in a training config: the run trains and best.pt carries the prior."""
    import molsym
    from molsym.train.cli import main
    from train_helpers import tiny_config, write_config

    config = tiny_config(tmp_path / "out", epochs=1, model={**tiny_config(tmp_path)["model"], "repulsion": {"type": "zbl"}})
    assert main(["train", str(write_config(tmp_path / "c.yaml", config))]) == 0
    assert molsym.load(tmp_path / "out" / "best.pt").config["repulsion"] == {"type": "zbl", "cutoff": "covalent"}


@pytest.mark.slow
def test_compiled_path_includes_the_prior():
    from molsym.models.compiled import CompiledPotential

    _, with_prior = _models()
    graph = from_ase(_compressed_molecule(0.6), with_prior.cutoff, torch.float64)
    eager = energy_forces_stress(with_prior, graph)
    out = CompiledPotential(with_prior)(graph)
    assert torch.allclose(out[K.ENERGY], eager[K.ENERGY].detach(), rtol=1e-10)
    assert torch.allclose(out[K.FORCES], eager[K.FORCES].detach(), rtol=1e-8, atol=1e-8)
