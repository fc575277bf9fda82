"""Dataset readers: extxyz / ASE files, ASE db (json, sqlite, aselmdb), OC20 S2EF, datasets, E0 and statistics.

Real files come from ../shared/data (3bpa, ethanol, oc20_format); OC20-style
data is generated with EMT in tmp_path.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from torch.utils.data import DataLoader

from molsym.data import keys as K
from molsym.data.graph import collate
from molsym.data.readers import (
    AseDbDataset,
    AtomsDataset,
    LinearReference,
    isolated_atom_reference,
    Sample,
    TargetError,
    TargetSpec,
    compute_statistics,
    fit_linear_reference,
    iter_samples,
    oc20_synthetic_frames,
    parse_s2ef_log,
    read_db_samples,
    read_oc20_s2ef,
    read_samples,
    samples_from_atoms,
    to_graph,
    write_oc20_synthetic,
    write_s2ef_extxyz,
)
from molsym.data.readers.asedb import open_shared

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOLSYM_SHARED_DATA", ROOT.parent / "shared" / "data"))
BPA = SHARED / "3bpa"
ETHANOL = SHARED / "ethanol"
OC20 = SHARED / "oc20_format"

needs_shared = pytest.mark.skipif(not (BPA / "train_300K.xyz").exists(), reason="shared data not available")


def _needs_lmdb():
    pytest.importorskip("lmdb")
    pytest.importorskip("ase_db_backends")


@pytest.fixture(scope="module")
def synthetic_frames():
    """6 systems (Cu/Pt x O/CO/H) x 3 frames of EMT slab + adsorbate data."""
    return oc20_synthetic_frames(num_systems=6, frames_per_system=3, seed=1)


@pytest.fixture(scope="module")
def synthetic_lmdb(tmp_path_factory):
    _needs_lmdb()
    path = tmp_path_factory.mktemp("oc20") / "synthetic.aselmdb"
    frames = write_oc20_synthetic(path, num_systems=6, frames_per_system=3, seed=1)
    return path, frames


def _emt_copper(count=3, seed=0):
    """Rattled periodic Cu cells with EMT energy, forces and stress in a SinglePointCalculator."""
    frames = []
    for i in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=seed + i)
        atoms.calc = EMT()
        results = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


# --- extxyz and any ASE file -----------------------------------------------------------


@needs_shared
def test_3bpa_reads_labels_from_stored_calculator():
    samples = read_samples(BPA / "train_300K.xyz", TargetSpec(required=("energy", "forces")), index=":50")
    frames = ase.io.read(BPA / "train_300K.xyz", index=":50")
    assert len(samples) == 50
    for sample, atoms in zip(samples, frames):
        assert set(sample.targets) == {K.ENERGY, K.FORCES}
        assert sample.targets[K.ENERGY].shape == (1,)
        np.testing.assert_allclose(sample.targets[K.ENERGY][0], atoms.get_potential_energy())
        np.testing.assert_allclose(sample.targets[K.FORCES], atoms.get_forces())
    assert samples[3].meta == {"source": str(BPA / "train_300K.xyz"), "index": 3}


@needs_shared
def test_missing_targets_are_absent_or_named_in_the_error():
    path = ETHANOL / "test_norm_mode_874.xyz"  # energies only
    samples = read_samples(path)
    assert all(set(s.targets) == {K.ENERGY} for s in samples)
    with pytest.raises(TargetError, match=r"test_norm_mode_874.xyz, frame 0: required forces not found under key 'forces'"):
        read_samples(path, TargetSpec(required=("forces",)))
    with pytest.raises(TargetError, match="frame 0: required energy not found under key 'REF_energy'"):
        read_samples(path, TargetSpec(energy="REF_energy", required=("energy",)))


def test_custom_keys_voigt_and_virial(tmp_path):
    frames = _emt_copper()
    for atoms in frames:
        stress = atoms.get_stress(voigt=False)
        atoms.info["REF_energy"] = atoms.get_potential_energy() + 1.0
        atoms.arrays["REF_forces"] = atoms.get_forces() * 2.0
        atoms.info["REF_stress"] = (stress * 3.0).ravel()  # 9 values
        atoms.info["REF_virial"] = -stress * atoms.get_volume()
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, frames, format="extxyz")

    plain = read_samples(path)
    labelled = read_samples(path, TargetSpec(energy="REF_energy", forces="REF_forces", stress="REF_stress"))
    from_virial = read_samples(path, TargetSpec(stress="missing", virial="REF_virial", required=("stress",)))
    for atoms, a, b, c in zip(frames, plain, labelled, from_virial):
        stress = atoms.get_stress(voigt=False)
        assert a.targets[K.STRESS].shape == (1, 3, 3)
        np.testing.assert_allclose(a.targets[K.STRESS][0], stress, atol=1e-12)  # from Voigt 6 in the calculator
        np.testing.assert_allclose(b.targets[K.STRESS][0], 3.0 * stress, atol=1e-12)
        np.testing.assert_allclose(c.targets[K.STRESS][0], stress, atol=1e-12)
        np.testing.assert_allclose(b.targets[K.ENERGY], a.targets[K.ENERGY] + 1.0)
        np.testing.assert_allclose(b.targets[K.FORCES], 2.0 * a.targets[K.FORCES])


def test_hessian_layouts_and_checks(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)[:2]
    n = len(atoms)
    rng = np.random.default_rng(0)
    half = rng.normal(size=(3 * n, 3 * n))
    hessian = half + half.T
    layouts = {"h_square": hessian, "h_flat": hessian.ravel(), "h_blocks": hessian.reshape(n, 3, n, 3)}
    for name, value in layouts.items():
        copy = atoms.copy()
        copy.info["hessian_source"] = value
        sample = samples_from_atoms([copy], TargetSpec(hessian="hessian_source"))[0]
        np.testing.assert_allclose(sample.targets[K.HESSIAN], hessian, err_msg=name)
    per_atom = atoms.copy()
    per_atom.arrays["hessian_rows"] = hessian.reshape(n, 9 * n)
    path = tmp_path / "h.extxyz"
    ase.io.write(path, [per_atom], format="extxyz")
    sample = read_samples(path, TargetSpec(hessian="hessian_rows"))[0]
    np.testing.assert_allclose(sample.targets[K.HESSIAN], hessian, atol=1e-12)

    bad = atoms.copy()
    bad.info["h"] = half  # not symmetric: wrong layout
    with pytest.raises(TargetError, match="hessian 'h' is not symmetric"):
        samples_from_atoms([bad], TargetSpec(hessian="h"), source="mem")
    bad.info["h"] = np.zeros(10)
    with pytest.raises(TargetError, match=r"mem, frame 0: hessian 'h' must hold \(3n\)\^2 = 36 values"):
        samples_from_atoms([bad], TargetSpec(hessian="h"), source="mem")


def test_shape_and_unit_errors():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    cases = [
        ("f", np.zeros((3, 3)), "forces", r"forces 'f' must have shape \(4, 3\)"),
        ("e", np.nan, "energy", "'e' contains NaN or inf"),
        ("e", [1.0, 2.0], "energy", r"energy 'e' must be one number \(eV\)"),
        ("s", np.zeros(4), "stress", "stress 's' must be Voigt 6, 9 or 3x3"),
        ("s", np.full(6, 50.0), "stress", "implausible in eV/Å³"),
        ("e", "abc", "energy", "'e' is not numeric"),
    ]
    for key, value, target, message in cases:
        copy = atoms.copy()
        if key == "f":
            copy.arrays[key] = np.zeros((len(copy), 2))
        else:
            copy.info[key] = value
        spec = TargetSpec(**{target: key})
        with pytest.raises(TargetError, match=message):
            samples_from_atoms([copy], spec, source="mem")


# --- ASE db: json, sqlite ---------------------------------------------------------------


@needs_shared
def test_fairchem_json_rows():
    models = read_db_samples(OC20 / "fairchem_tests_core_models_atoms.json", TargetSpec(tags=True, fixed=True))
    graph = read_db_samples(OC20 / "fairchem_tests_core_graph_atoms.json", TargetSpec.oc20(stress="stress"))
    row = ase.db.connect(OC20 / "fairchem_tests_core_models_atoms.json").get(1)
    (sample,) = models
    assert sample.targets[K.ENERGY][0] == pytest.approx(-135.66393572)
    np.testing.assert_allclose(sample.targets[K.FORCES], row.forces)
    assert sample.targets[K.FIXED].sum() == 24 and sample.targets[K.FIXED].dtype == bool
    np.testing.assert_array_equal(sample.targets[K.FIXED], np.isin(np.arange(34), row.constraints[0].index))
    np.testing.assert_array_equal(sample.targets[K.TAGS], row.tags)
    assert K.STRESS not in sample.targets and sample.meta["id"] == 1
    np.testing.assert_allclose(graph[0].targets[K.STRESS][0], -0.02096864 * np.eye(3))


def test_sqlite_db_with_data_and_key_value_pairs(tmp_path, synthetic_frames):
    path = tmp_path / "s.db"
    db = ase.db.connect(path)
    for atoms in synthetic_frames[:4]:
        hessian = np.eye(3 * len(atoms))
        db.write(atoms, sid=atoms.info["sid"], data={"fid": atoms.info["fid"], "ref_energy": atoms.info["ref_energy"],
                                                     "hessian": hessian})
    spec = TargetSpec.oc20(hessian="hessian", reference_key="ref_energy")
    samples = read_db_samples(path, spec)
    for sample, atoms in zip(samples, synthetic_frames):
        assert sample.meta["sid"] == atoms.info["sid"] and sample.meta["fid"] == atoms.info["fid"]
        expected = atoms.get_potential_energy() - atoms.info["ref_energy"]
        np.testing.assert_allclose(sample.targets[K.ENERGY], [expected])
        assert sample.targets[K.HESSIAN].shape == (3 * len(atoms),) * 2
    dataset = AtomsDataset.from_file(path, cutoff=4.0, spec=spec, index="1:3")
    assert len(dataset) == 2 and dataset.sample(0).meta["index"] == 1


# --- OC20 aselmdb -----------------------------------------------------------------------


@needs_shared
def test_real_aselmdb_sample_matches_its_sources():
    _needs_lmdb()
    dataset = AseDbDataset(OC20 / "oc20_format_sample_DERIVED.aselmdb", cutoff=6.0)
    toy = ase.io.read(OC20 / "toy_c3h8_relax_EMT.extxyz", index=":20")
    assert len(dataset) == 21
    for index in (0, 7, 19):
        sample, atoms = dataset.sample(index), toy[index]
        assert sample.meta["fid"] == index
        np.testing.assert_allclose(sample.atoms.positions, atoms.positions)
        np.testing.assert_allclose(sample.targets[K.ENERGY][0], atoms.get_potential_energy())
        np.testing.assert_allclose(sample.targets[K.FORCES], atoms.get_forces(apply_constraint=False))
        np.testing.assert_array_equal(sample.targets[K.TAGS], atoms.get_tags())
        np.testing.assert_array_equal(sample.targets[K.FIXED], atoms.get_tags() == 0)
    last = dataset[-1]
    assert last[K.POSITIONS].shape == (34, 3) and last[K.FIXED].sum() == 24
    with pytest.raises(IndexError):
        dataset[21]


def test_synthetic_oc20_layout(synthetic_lmdb):
    path, frames = synthetic_lmdb
    dataset = AseDbDataset(path, cutoff=6.0, spec=TargetSpec.oc20(reference_key="ref_energy"))
    assert len(dataset) == len(frames) == 18
    symbols = set()
    for index in range(len(dataset)):
        sample, atoms = dataset.sample(index), frames[index]
        tags = sample.targets[K.TAGS]
        assert set(np.unique(tags)) == {0, 1, 2}
        np.testing.assert_array_equal(sample.targets[K.FIXED], tags == 0)
        assert sample.meta["sid"] == index // 3 and sample.meta["fid"] == index % 3
        np.testing.assert_allclose(sample.targets[K.ENERGY][0], atoms.get_potential_energy() - atoms.info["ref_energy"])
        symbols.add("".join(sorted(set(sample.atoms[tags == 2].get_chemical_symbols()))))
        symbols.add(sample.atoms[0].symbol)
    assert symbols == {"Cu", "Pt", "O", "CO", "H"}
    # a stored frame's energy and forces are EMT's own
    check = dataset.sample(4).atoms.copy()
    check.calc = EMT()
    np.testing.assert_allclose(check.get_potential_energy(), frames[4].get_potential_energy())
    np.testing.assert_allclose(check.get_forces(apply_constraint=False), dataset.sample(4).targets[K.FORCES], atol=1e-10)


def test_streaming_reads_one_row_per_item(synthetic_lmdb):
    path, _ = synthetic_lmdb
    dataset = AseDbDataset(path, cutoff=6.0)
    db = open_shared(path, "aselmdb")
    calls = []
    original = db.get
    db.get = lambda *args, **kwargs: (calls.append(kwargs), original(*args, **kwargs))[1]
    try:
        graph = dataset[5]
    finally:
        del db.get
    assert calls == [{"id": int(dataset.ids[0][5])}]
    assert graph[K.ENERGY].shape == (1,) and graph[K.TAGS].dtype == torch.long
    state = pickle.loads(pickle.dumps(dataset))  # pickles as paths and ids: no handle inside
    assert set(vars(state)) == {"paths", "kinds", "cutoff", "dtype", "spec", "ids", "_ends"}
    assert torch.equal(state[5][K.POSITIONS], graph[K.POSITIONS])


def test_streaming_dataloader_workers_and_many_files(tmp_path, synthetic_lmdb):
    path, frames = synthetic_lmdb
    folder = tmp_path / "shards"
    folder.mkdir()
    write_oc20_synthetic(folder / "a.aselmdb", num_systems=2, frames_per_system=2, seed=3)
    write_oc20_synthetic(folder / "b.aselmdb", num_systems=3, frames_per_system=1, seed=4)
    shards = AseDbDataset(folder, cutoff=5.0, dtype=torch.float32)
    assert len(shards) == 7 and shards.sample(4).meta["source"].endswith("b.aselmdb")
    assert shards.sample(4).meta["sid"] == 0

    dataset = AseDbDataset(path, cutoff=6.0)
    dataset[0]  # the parent opens the file before the workers fork
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(b[K.NUM_ATOMS].shape[0] for b in batches) == len(dataset)
    first = batches[0]
    assert first[K.ENERGY].shape == (4,) and first[K.FIXED].shape == (first[K.POSITIONS].shape[0],)
    np.testing.assert_allclose(first[K.ENERGY][1].item(), frames[1].get_potential_energy())
    assert dataset[3][K.NUM_ATOMS].item() == len(frames[3])  # the parent still reads after the workers


# --- OC20 S2EF extxyz -------------------------------------------------------------------


@needs_shared
def test_oc20_s2ef_extxyz_with_log(tmp_path):
    path = OC20 / "toy_c3h8_relax_EMT.extxyz"
    samples = read_oc20_s2ef(path)
    assert len(samples) == 101
    first = samples[0]
    assert np.bincount(first.targets[K.TAGS]).tolist() == [18, 9, 11]
    np.testing.assert_array_equal(first.targets[K.FIXED], first.targets[K.TAGS] == 0)
    assert first.targets[K.ENERGY][0] == pytest.approx(15.804699620277187)
    assert first.targets[K.FORCES][0, 2] == pytest.approx(0.11356054)  # unconstrained, as stored

    log = tmp_path / "toy.txt"
    log.write_text("".join(f"random777,frame{i},{0.5 * i}\n" for i in range(101)))
    referenced = read_oc20_s2ef(path, log_path=log, subtract_reference=True, index="10:13")
    assert [s.meta["index"] for s in referenced] == [10, 11, 12]
    for sample in referenced:
        i = sample.meta["fid"]
        assert sample.meta["sid"] == 777 and sample.meta["ref_energy"] == 0.5 * i
        assert sample.targets[K.ENERGY][0] == pytest.approx(samples[i].targets[K.ENERGY][0] - 0.5 * i)

    log.write_text("random1,frame0,1.0\n")
    with pytest.raises(ValueError, match="1 lines for 101 frames"):
        read_oc20_s2ef(path, log_path=log)
    log.write_text("random1,frame0,1.0\nrandomX,frame1\n")
    with pytest.raises(ValueError, match="line 2: cannot parse 'randomX,frame1'"):
        parse_s2ef_log(log)
    with pytest.raises(ValueError, match="subtract_reference needs the frame log"):
        read_oc20_s2ef(path, subtract_reference=True)


def test_synthetic_s2ef_roundtrip(tmp_path, synthetic_frames):
    extxyz, log = write_s2ef_extxyz(synthetic_frames, tmp_path / "data.extxyz")
    header = extxyz.read_text().splitlines()[1]
    assert "move_mask:L:1" in header and "tags:I:1" in header and "forces:R:3" in header
    samples = read_oc20_s2ef(extxyz, subtract_reference=True)  # finds data.txt beside it
    for sample, atoms in zip(samples, synthetic_frames):
        np.testing.assert_allclose(sample.targets[K.ENERGY][0], atoms.get_potential_energy() - atoms.info["ref_energy"])
        np.testing.assert_array_equal(sample.targets[K.TAGS], atoms.get_tags())
        np.testing.assert_array_equal(sample.targets[K.FIXED], atoms.get_tags() == 0)
    write_s2ef_extxyz(synthetic_frames, tmp_path / "test.extxyz", with_reference=False)
    assert parse_s2ef_log(tmp_path / "test.txt")[4].ref_energy is None
    with pytest.raises(TargetError, match="reference energy 'ref_energy' not found"):
        read_oc20_s2ef(tmp_path / "test.extxyz", subtract_reference=True)


# --- references, E0 and statistics -----------------------------------------------------


@needs_shared
def test_reference_tables():
    iso = isolated_atom_reference(BPA / "iso_atoms.xyz")
    assert iso.as_dict() == pytest.approx({1: -13.587222780835477, 6: -1029.4889999855063,
                                           7: -1484.9814568572233, 8: -2041.9816003861047})
    assert iso.energy([1, 1, 8])[0] == pytest.approx(2 * -13.587222780835477 - 2041.9816003861047)
    with pytest.raises(ValueError, match=r"no reference energy for elements Z=\[3\]"):
        iso.energy([1, 3])
    ethanol = isolated_atom_reference(ETHANOL / "isolated_atoms.xyz")
    assert set(ethanol.as_dict()) == {1, 6, 7, 8}

    linref = LinearReference.load(OC20 / "oc20_linref.npz")
    coeff = np.load(OC20 / "oc20_linref.npz")["coeff"]
    assert linref.energies.shape == (100,)
    toy = ase.io.read(OC20 / "toy_c3h8_relax_EMT.extxyz", index="0")
    assert linref.energy(toy.numbers)[0] == pytest.approx(coeff[toy.numbers].sum())
    uma = LinearReference.load(OC20 / "uma_iso_atom_elem_refs.yaml", key="oc20_elem_refs")
    assert uma.energies.shape == (100,) and uma.energies[1] == pytest.approx(-0.16141512)
    with pytest.raises(ValueError, match="no entry 'nope'"):
        LinearReference.load(OC20 / "uma_iso_atom_elem_refs.yaml", key="nope")

    subtracted = read_samples(OC20 / "toy_c3h8_relax_EMT.extxyz", TargetSpec(linear_reference=linref), index="0")
    assert subtracted[0].targets[K.ENERGY][0] == pytest.approx(toy.get_potential_energy() - coeff[toy.numbers].sum())
    assert LinearReference.from_dict({"H": -1.0, 8: -2.0}).energy([8, 1, 1])[0] == -4.0


def test_least_squares_e0_recovers_known_values():
    rng = np.random.default_rng(0)
    true = {1: -13.6, 6: -1029.5, 8: -2042.0}
    samples = []
    for _ in range(30):
        numbers = rng.choice(list(true), size=rng.integers(2, 12))
        atoms = ase.Atoms(numbers=numbers, positions=rng.normal(size=(len(numbers), 3)) * 3)
        energy = sum(true[int(z)] for z in numbers) + rng.normal(scale=1e-3)
        samples.append(Sample(atoms, {K.ENERGY: np.array([energy])}))
    fitted = fit_linear_reference(samples).as_dict()
    assert fitted == pytest.approx(true, abs=5e-3)
    same = [Sample(ase.Atoms("H2O"), {K.ENERGY: np.array([-2070.0 + 0.01 * i])}) for i in range(5)]
    with pytest.warns(UserWarning, match="determine only 1 of 2"):
        fit_linear_reference(same)


@needs_shared
def test_statistics_on_3bpa():
    dataset = AtomsDataset.from_file(BPA / "train_300K.xyz", cutoff=5.0, index=":40")
    e0 = isolated_atom_reference(BPA / "iso_atoms.xyz")
    stats = compute_statistics(iter_samples(dataset), e0, cutoff=5.0)
    residuals = [(s.targets[K.ENERGY][0] - e0.energy(s.atoms.numbers)[0]) / len(s.atoms) for s in dataset.samples]
    forces = np.concatenate([s.targets[K.FORCES] for s in dataset.samples])
    assert stats.shift == pytest.approx(np.mean(residuals)) and stats.num_structures == 40
    assert stats.energy_per_atom_std == pytest.approx(np.std(residuals))
    assert stats.scale == stats.force_rms == pytest.approx(np.sqrt(np.mean(forces**2)))
    edges = sum(dataset[i][K.EDGE_INDEX].shape[1] for i in range(len(dataset)))
    assert stats.avg_num_neighbours == pytest.approx(edges / (40 * 27))
    few = compute_statistics(iter_samples(dataset, max_structures=5))
    assert few.num_structures == 5 and few.avg_num_neighbours is None


# --- datasets and batching --------------------------------------------------------------


@needs_shared
def test_in_memory_dataset_batches(tmp_path):
    spec = TargetSpec(required=("energy", "forces"))
    dataset = AtomsDataset.from_file(ETHANOL / "train.xyz", cutoff=4.0, dtype=torch.float32, spec=spec, index=":8")
    cached = AtomsDataset(dataset.samples, cutoff=4.0, dtype=torch.float32, precompute=True)
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate)))
    assert batch[K.ENERGY].shape == (4,) and batch[K.ENERGY].dtype == torch.float32
    assert batch[K.FORCES].shape == (36, 3) and batch[K.BATCH].max().item() == 3
    for key, value in dataset[2].items():
        assert torch.equal(value, cached[2][key]), key

    frames = _emt_copper(2)
    stress_batch = collate([to_graph(s, 3.0) for s in samples_from_atoms(frames)])
    assert stress_batch[K.STRESS].shape == (2, 3, 3) and stress_batch[K.STRESS].dtype == torch.float64
    np.testing.assert_allclose(stress_batch[K.STRESS][1].numpy(), frames[1].get_stress(voigt=False))

    atoms = frames[0].copy()
    atoms.info["h"] = np.eye(12).ravel()
    pair = [to_graph(s, 3.0) for s in samples_from_atoms([atoms, atoms], TargetSpec(hessian="h"))]
    assert collate(pair)[K.HESSIAN].shape == (24, 24)


def test_oc20_dataset_batches_with_tags_and_fixed(synthetic_frames):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samples = samples_from_atoms(synthetic_frames, TargetSpec.oc20(reference_key="ref_energy"))
    dataset = AtomsDataset(samples, cutoff=6.0)
    batch = collate([dataset[i] for i in range(5)])
    n = sum(len(a) for a in synthetic_frames[:5])
    assert batch[K.TAGS].shape == (n,) and batch[K.TAGS].dtype == torch.long
    assert batch[K.FIXED].shape == (n,) and batch[K.FIXED].dtype == torch.bool
    assert torch.equal(batch[K.FIXED], batch[K.TAGS] == 0)


def test_horm_reader_reads_real_hessians():
    """HORM (CC BY-NC-SA: read from ../shared only): shapes, units and the translational sum rule of DFT Hessians."""
    from conftest import SHARED
    from molsym.data.readers.horm import read_horm_npz

    path = SHARED / "horm_sample100" / "sample_100_DERIVED.npz"
    if not path.exists():
        pytest.skip("HORM sample not available")
    samples = read_horm_npz(path, indices=[0, 99])
    data = np.load(path)
    for sample, index in zip(samples, (0, 99)):
        n = len(sample.atoms)
        assert n == data["natoms"][index] and sample.meta["index"] == index
        h = sample.targets["hessian"]
        assert h.shape == (3 * n, 3 * n) and sample.targets["forces"].shape == (n, 3)
        np.testing.assert_allclose(sample.targets["energy"], data["energy"][index], rtol=1e-7)
        # translational invariance of the reference: block rows sum to ~0 (float32 storage, DFT grids)
        assert np.abs(h.reshape(3 * n, n, 3).sum(1)).max() < 1e-2 * np.abs(h).max()
    assert read_horm_npz(path, indices=[3], energy="ae")[0].targets["energy"][0] == pytest.approx(float(data["ae"][3]))
    assert len(read_horm_npz(path)) == 100
    with pytest.raises(IndexError, match="molecule 100 out of range"):
        read_horm_npz(path, indices=[100])
