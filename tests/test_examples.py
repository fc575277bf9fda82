"""The shipped examples run as users run them (subprocesses) and print what they promise."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import torch

import molsym

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"
DATA = ROOT / "examples" / "data"


def run_quickstart(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(QUICKSTART), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"quickstart failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in:\n{text}"
    return float(match.group(1))


def test_quickstart_default_run():
    out = run_quickstart()
    assert "27 atoms" in out
    assert abs(number(r"energy: (-?[\d.]+) eV", out)) < 1e3
    assert number(r"max force: ([\d.]+) eV/A", out) > 0
    assert "hessian: shape (81, 81)" in out
    eigenvalues = re.search(r"lowest hessian eigenvalues \(eV/A\^2\): (.+)", out).group(1).split()
    assert len(eigenvalues) == 6
    assert out.count("  step ") == 6 and "step   200" in out
    drift = number(r"drift (-?[\d.e+-]+) eV/atom", out)
    deviation = number(r"max deviation ([\d.e+-]+) eV/atom", out)
    assert abs(drift) < 1e-4 and deviation < 1e-4


def test_quickstart_with_a_checkpoint(tmp_path):
    torch.manual_seed(3)
    model = molsym.Potential.from_config({"family": "tensornet", "elements": [1, 6, 7, 8], "channels": 8,
                                          "num_radial": 8})
    path = tmp_path / "model.pt"
    molsym.save(model, path)
    out = run_quickstart("--model", str(path), "--steps", "10")
    assert f"model: {path}" in out
    expected = model.double().predict(ase.io.read(DATA / "3bpa_subset.xyz", index=0))["energy"]
    assert abs(number(r"energy: (-?[\d.]+) eV", out) - expected) < 1e-6
    assert "step    10" in out


def test_demo_trains_evaluates_and_runs_md(tmp_path):
    """The `make demo` chain, shortened: train (one epoch), evaluate with plots, MD with the trained model."""
    run = tmp_path / "demo"
    train = subprocess.run([sys.executable, "-m", "molsym.train", str(ROOT / "examples" / "demo" / "config.yaml"),
                            "--output", str(run), "--set", "epochs=1", "--set", "progress=false"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    assert "test" in train.stdout and (run / "best.pt").exists()
    evaluation = subprocess.run([sys.executable, "-c", "import sys; from molsym.train.cli import main; sys.exit(main())",
                                 "eval", "--model", str(run / "best.pt"), "--data", str(DATA / "3bpa_demo_test.xyz"),
                                 "--output", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert evaluation.returncode == 0, evaluation.stderr
    assert "(50 structures)" in evaluation.stdout
    assert (run / "parity_forces_3bpa_demo_test.png").exists() and (run / "learning_curve.png").exists()
    out = run_quickstart("--model", str(run / "best.pt"), "--steps", "20")
    assert "step    20" in out and "elements [1, 6, 7, 8]" in out


def test_shipped_data_and_attribution():
    frames = ase.io.read(DATA / "3bpa_subset.xyz", index=":")
    assert len(frames) == 20 and all(len(a) == 27 for a in frames)
    assert all(not a.pbc.any() for a in frames)
    assert frames[0].get_potential_energy() < -17000  # DFT labels are kept (eV)
    readme = (DATA / "README.md").read_text()
    digest = hashlib.sha256((DATA / "3bpa_subset.xyz").read_bytes()).hexdigest()
    assert digest in readme
    assert "29e6d467317e4b5967b7ea5cbee54de953fa0d45" in readme and "10.1021/acs.jctc.1c00647" in readme
    assert "MIT License" in (DATA / "LICENSE").read_text()
    train = ase.io.read(DATA / "3bpa_demo_train.xyz", index=":")
    test = ase.io.read(DATA / "3bpa_demo_test.xyz", index=":")
    assert len(train) == 150 and len(test) == 50
    for name in ("3bpa_demo_train.xyz", "3bpa_demo_test.xyz"):
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() in readme
    seen = {a.positions.round(5).tobytes() for a in train}
    assert not any(a.positions.round(5).tobytes() in seen for a in test)  # the test structures are held out


def test_3bpa_protocol_configs_run(tmp_path):
    """Each examples/3bpa config validates (data paths included) and trains: one short epoch on 20 structures."""
    import pytest

    from molsym.train.config import load_config

    configs = sorted((ROOT / "examples" / "3bpa").glob("*.yaml"))
    assert {path.stem for path in configs} >= {"tensornet", "e3nn"}
    if not (ROOT.parent / "shared" / "data" / "3bpa" / "train_300K.xyz").exists():
        pytest.skip("the 3BPA data of ../shared/data is not present")
    for path in configs:
        config = load_config(path)
        assert config["data"]["test_exclude_train"] and config["data"]["valid_fraction"] == 0.1
        result = subprocess.run(
            [sys.executable, "-m", "molsym.train", str(path), "--output", str(tmp_path / path.stem),
             "--set", "epochs=1", "--set", "data.max_structures=20", "--set", "data.test=null"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / path.stem / "best.pt").exists()
