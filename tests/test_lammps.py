"""pair_style molsym in LAMMPS (on 1, 2 and 4 MPI ranks) against the ASE calculator.

The plugin is built once per session by ``make lammps`` (cached in build/lammps). A small float64
TensorNet (cutoff 3 Å, 3 message-passing hops) is exported; LAMMPS evaluates it on a periodic
water box and a rattled, sheared Cu crystal, split over 1 rank, 2 ranks and 2 x 2 x 1 ranks,
with ghost atoms out to the receptive field. Energies, per-atom energies, forces and the virial
must equal the ASE calculator's to 1e-8 (eV, eV/Å, eV): the same float64 model, with sums in
another order. Long runs (1000 NVE steps) are marked slow.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

import molsym
from molsym.calculators import MolSymCalculator
from molsym.export import export
from molsym.lammps_io import (BAR_PER_EV_A3, PLUGIN, ROOT, environment_bin, lammps_env, lammps_oriented, read_dump,
                               run_lammps, write_data)
from conftest import bpa_frames, make_model, periodic_copper

TOLERANCE = 1e-8
ELEMENTS = ["H", "C", "N", "O", "Cu"]  # the order of conftest.ELEMENTS: LAMMPS types 1..5


def _water_box(molecules_per_side: int):
    spec = importlib.util.spec_from_file_location("bench_systems", ROOT / "benchmarks" / "systems.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.water_box(molecules_per_side)


@pytest.fixture(scope="session")
def plugin():
    """Build pair_style molsym with `make lammps` (skipped where no C++ compiler is found)."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler (c++ or g++) on this machine: pair_style molsym cannot be built")
    result = subprocess.run(["make", "lammps"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"make lammps failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert PLUGIN.exists()
    return PLUGIN


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = make_model("tensornet", cutoff=3.0)
    path = tmp_path_factory.mktemp("lammps_model") / "tensornet.pt"
    export(model, path)
    return model, path


def input_script(plugin, model_path, *, processors: str | None = None, pair_coeff_elements=ELEMENTS,
                 body: str = "run 0") -> str:
    return f"""
plugin load {plugin}
units metal
atom_style atomic
boundary p p p
{f"processors {processors}" if processors else ""}
read_data data.lmp
pair_style molsym
pair_coeff * * {model_path} {' '.join(pair_coeff_elements)}
compute peatom all pe/atom
compute virial all pressure NULL virial
thermo_style custom step pe c_virial[1] c_virial[2] c_virial[3] c_virial[4] c_virial[5] c_virial[6]
{body}
"""


SINGLE_POINT = """
dump forces all custom 1 forces.dump id type fx fy fz c_peatom
dump_modify forces format float %.17g sort id
run 0
print "$(pe:%.17g) $(vol:%.17g) $(c_virial[1]:%.17g) $(c_virial[2]:%.17g) $(c_virial[3]:%.17g) \
$(c_virial[4]:%.17g) $(c_virial[5]:%.17g) $(c_virial[6]:%.17g)" file result.txt
"""


def lammps_single_point(plugin, model_path, atoms, workdir, ranks=1, processors=None):
    """(energy eV, per-atom energies (N,), forces (N, 3), virial W (6,) eV in LAMMPS' order
    xx yy zz xy xz yz) from LAMMPS."""
    write_data(atoms, workdir / "data.lmp", ELEMENTS)
    result = run_lammps(input_script(plugin, model_path, processors=processors, body=SINGLE_POINT), workdir, ranks)
    assert result.returncode == 0, f"LAMMPS failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    values = np.array((workdir / "result.txt").read_text().split(), dtype=float)
    energy, volume, pressure = values[0], values[1], values[2:]
    dump = read_dump(workdir / "forces.dump")
    forces = np.stack([dump["fx"], dump["fy"], dump["fz"]], axis=1)
    return energy, dump["c_peatom"], forces, pressure * volume / BAR_PER_EV_A3


def ase_reference(model, atoms):
    atoms = atoms.copy()
    atoms.calc = MolSymCalculator(model, dtype="float64")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    energies = atoms.get_potential_energies()
    sxx, syy, szz, syz, sxz, sxy = atoms.get_stress(voigt=True)
    virial = -atoms.get_volume() * np.array([sxx, syy, szz, sxy, sxz, syz])  # W = -V sigma
    return energy, energies, forces, virial


def assert_matches(lammps, reference, label):
    for name, got, want in zip(("energy", "per-atom energies", "forces", "virial"), lammps, reference):
        error = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
        assert error < TOLERANCE, f"{label}: LAMMPS and ASE {name} differ by {error:.3g}"


SYSTEMS = {
    "water": lambda: _water_box(4),  # 192 atoms
    "copper": lambda: periodic_copper(repeat=3, shear=0.05),  # 109 atoms, rattled, triclinic
}
_REFERENCES: dict = {}


@pytest.mark.parametrize("ranks,processors", [(1, None), (2, None), (4, "2 2 1")], ids=["1rank", "2ranks", "2x2x1"])
@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_periodic_system_matches_ase(plugin, model_file, tmp_path, system, ranks, processors):
    model, path = model_file
    atoms = lammps_oriented(SYSTEMS[system]())
    if system not in _REFERENCES:
        _REFERENCES[system] = ase_reference(model, atoms)
    lammps = lammps_single_point(plugin, path, atoms, tmp_path, ranks, processors)
    assert_matches(lammps, _REFERENCES[system], f"{system} on {ranks} rank(s)")


def test_float32_export(plugin, tmp_path):
    """A float32 export runs in float32 inside LAMMPS: forces within float32 rounding of ASE's float64."""
    model = make_model("tensornet", cutoff=3.0)
    export(model, tmp_path / "model32.pt", dtype="float32")
    atoms = lammps_oriented(SYSTEMS["copper"]())
    energy, _, forces, virial = lammps_single_point(plugin, tmp_path / "model32.pt", atoms, tmp_path, ranks=2)
    reference = ase_reference(model, atoms)
    scale = np.abs(reference[2]).max()
    assert np.abs(forces - reference[2]).max() < 1e-4 * max(1.0, scale)
    assert 1e-12 < np.abs(forces - reference[2]).max()  # it did run in float32
    assert abs(energy - reference[0]) < 1e-6 * max(1.0, abs(reference[0])) * len(atoms)


def test_molecule_in_a_large_box(plugin, model_file, tmp_path):
    """A molecule in an empty 40 Å box, off centre, on 2 ranks: one rank owns no atom."""
    model, path = model_file
    molecule = bpa_frames(1)[0]
    molecule.set_cell(np.eye(3) * 40.0)
    molecule.pbc = True
    molecule.translate(np.array([10.0, 20.0, 20.0]) - molecule.get_positions().mean(0))
    assert molecule.get_positions()[:, 0].max() < 20.0  # all in the first half along x
    energy, energies, forces, _ = ase_reference(model, molecule)
    got = lammps_single_point(plugin, path, molecule, tmp_path, ranks=2)
    assert_matches(got[:3], (energy, energies, forces), "molecule on 2 ranks")
    isolated = molecule.copy()
    isolated.pbc = False
    isolated.calc = MolSymCalculator(model, dtype="float64")
    assert abs(isolated.get_potential_energy() - got[0]) < TOLERANCE


def test_unknown_element_is_refused(plugin, model_file, tmp_path):
    _, path = model_file
    write_data(lammps_oriented(periodic_copper(repeat=1)), tmp_path / "data.lmp", ["Cu", "O", "Xe"])
    script = input_script(plugin, path, pair_coeff_elements=["Cu", "O", "Xe"])
    result = run_lammps(script, tmp_path)
    assert result.returncode != 0
    assert "element Xe (atom type 3) is not in model" in result.stdout + result.stderr


def test_newton_off_is_refused(plugin, model_file, tmp_path):
    _, path = model_file
    write_data(lammps_oriented(periodic_copper(repeat=1)), tmp_path / "data.lmp", ELEMENTS)
    script = input_script(plugin, path).replace("units metal", "units metal\nnewton off")
    result = run_lammps(script, tmp_path)
    assert result.returncode != 0 and "needs newton_pair on" in result.stdout + result.stderr


def nve_energies_lammps(plugin, model_path, atoms, workdir, steps, every, dt_fs, ranks):
    write_data(atoms, workdir / "data.lmp", ELEMENTS, velocities=True)
    body = f"""
timestep {dt_fs / 1000.0}
fix nve all nve
thermo {every}
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
run {steps}
"""
    result = run_lammps(input_script(plugin, model_path, body=body), workdir, ranks)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    table = [r for r in rows if len(r) == 4 and r[0].isdigit()]
    return np.array(table, dtype=float)[:, 3]


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2])
def test_nve_conserves_energy_as_ase_does(plugin, model_file, tmp_path, ranks):
    """1000 velocity-Verlet steps of 1 fs for a 300 K Cu crystal: LAMMPS' total energy drifts
    and fluctuates no more than the ASE run of the same start (same model, same integrator)."""
    model, path = model_file
    atoms = lammps_oriented(periodic_copper(repeat=3, shear=0.05))
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.set_momenta(atoms.get_momenta() - atoms.get_momenta().sum(0) / len(atoms))  # no drift of the centre
    steps, every, dt = 1000, 10, 1.0
    lammps = nve_energies_lammps(plugin, path, atoms, tmp_path, steps, every, dt, ranks)
    ase_atoms = atoms.copy()
    ase_atoms.calc = MolSymCalculator(model, dtype="float64")
    dynamics = VelocityVerlet(ase_atoms, timestep=dt * units.fs)
    reference = [ase_atoms.get_total_energy()]
    for _ in range(steps // every):
        dynamics.run(every)
        reference.append(ase_atoms.get_total_energy())
    reference = np.array(reference)
    assert len(lammps) == len(reference)
    assert abs(lammps[0] - reference[0]) < 1e-6  # same start (LAMMPS' kinetic-energy constant differs ~1e-7)
    spread_lammps, spread_ase = np.ptp(lammps), np.ptp(reference)
    assert spread_lammps < 2.0 * spread_ase + 1e-4, (spread_lammps, spread_ase)
    assert spread_lammps < 1e-3 * len(atoms)  # well conserved in absolute terms too (eV)


def test_example_prepares_and_runs_on_two_ranks(plugin, tmp_path):
    """examples/lammps as its README runs it: prepare.py, then in.water under mpiexec -n 2 with the
    lmp launcher of the environment (a few steps)."""
    molsym.save(make_model("tensornet", cutoff=3.0), tmp_path / "model.ckpt")
    run = tmp_path / "run"
    prepared = subprocess.run([sys.executable, str(ROOT / "examples" / "lammps" / "prepare.py"), "--model",
                               str(tmp_path / "model.ckpt"), "--output", str(run)],
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr
    assert "192 atoms" in prepared.stdout
    command = [str(environment_bin() / "mpiexec"), "-n", "2", str(environment_bin() / "lmp"), "-in",
               str(ROOT / "examples" / "lammps" / "in.water"), "-var", "plugin", str(plugin), "-var", "steps", "10",
               "-log", "none"]
    result = subprocess.run(command, cwd=run, env=lammps_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Loop time" in result.stdout and "on 2 procs for 10 steps with 192 atoms" in result.stdout


def npt_thermo(plugin, model_path, atoms, workdir, ranks, processors=None):
    """(steps, 5) of pe (eV), press (bar), vol (Å^3), etotal, ke (eV) every 5 steps of a 40-step
    Nosé-Hoover NPT run at 300 K and 10 kbar (1 fs steps, 50 fs barostat)."""
    write_data(atoms, workdir / "data.lmp", ELEMENTS, velocities=True)
    body = """
timestep 0.001
fix npt all npt temp 300 300 0.1 aniso 10000 10000 0.05
thermo 5
thermo_style custom step pe press vol etotal ke
thermo_modify format float %.17g
run 40
"""
    result = run_lammps(input_script(plugin, model_path, processors=processors, body=body), workdir, ranks)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    return np.array([r[1:] for r in rows if len(r) == 6 and r[0].isdigit()], dtype=float)


def test_npt_is_driven_by_the_virial_alike_on_any_decomposition(plugin, model_file, tmp_path):
    """The barostat reads the model's virial: a Cu crystal pressed at 10 kbar shrinks, and the
    trajectory (energy, pressure, volume) on 2 x 2 x 1 ranks equals the one on 1 rank while the
    box deforms and atoms cross domains (float64; only the order of sums differs)."""
    model, path = model_file
    atoms = lammps_oriented(periodic_copper(repeat=3, shear=0.05))
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    (tmp_path / "one").mkdir()
    (tmp_path / "four").mkdir()
    one = npt_thermo(plugin, path, atoms, tmp_path / "one", 1)
    four = npt_thermo(plugin, path, atoms, tmp_path / "four", 4, "2 2 1")
    assert one.shape == (9, 5)
    energy, _, _, virial = ase_reference(model, atoms)
    # the start: LAMMPS' pressure is (2 KE + trace W) / 3V with ASE's virial (and LAMMPS' own KE,
    # whose unit constant differs from ASE's by ~1e-7)
    pressure = (2 * one[0, 4] + virial[:3].sum()) / (3 * atoms.get_volume()) * BAR_PER_EV_A3
    assert abs(one[0, 0] - energy) < TOLERANCE
    assert abs(one[0, 1] - pressure) < 1e-4, (one[0, 1], pressure)  # bar; 1e-8 eV of virial is 1.3e-5 bar
    assert np.allclose(four, one, rtol=1e-9, atol=1e-7), np.abs(four - one).max(0)
    assert one[-1, 2] < one[0, 2]  # pressed above its own pressure, the box shrinks
