"""examples/oc20/make_data.py writes train and valid .aselmdb files that AseDbDataset reads with OC20 targets."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ase_db_backends.aselmdb")
pytest.importorskip("lmdb")

from molsym.data.readers import AseDbDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "oc20" / "make_data.py"


def test_make_data_writes_readable_splits(tmp_path):
    output = tmp_path / "oc20"
    command = [sys.executable, str(SCRIPT), "--output", str(output), "--systems", "2", "--frames", "2",
               "--valid-systems", "2", "--valid-frames", "1", "--size", "2", "2", "3", "--seed", "3"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train: 4 rows" in result.stdout and "valid: 2 rows" in result.stdout, result.stdout
    assert "fixed atoms" in result.stdout

    train_path, valid_path = output / "train.aselmdb", output / "valid.aselmdb"
    assert train_path.exists() and valid_path.exists()
    train = AseDbDataset(train_path, cutoff=5.0)
    valid = AseDbDataset(valid_path, cutoff=5.0)
    try:
        assert (len(train), len(valid)) == (4, 2)
        for dataset in (train, valid):
            for index in range(len(dataset)):
                graph = dataset[index]
                n = graph["positions"].shape[0]
                assert n == 13  # 2 x 2 x 3 slab + one O atom (sids 0, 1: Cu, Pt with O)
                assert graph["forces"].shape == (n, 3) and graph["energy"].shape == (1,)
                assert torch.equal(torch.unique(graph["tags"]), torch.tensor([0, 1, 2]))
                assert torch.equal(graph["fixed"], graph["tags"] == 0)
                assert graph["fixed"].any() and not graph["fixed"].all()
                assert set(dataset.sample(index).meta) >= {"sid", "fid", "ref_energy"}
        # another seed: the validation split's frames are not the training split's
        assert not torch.allclose(train[0]["positions"], valid[0]["positions"])
    finally:
        train.close()
        valid.close()


def test_example_config_trains_on_the_written_data(tmp_path):
    """examples/oc20/config.yaml trains on make_data.py's output (one short epoch, streamed from LMDB)."""
    output = tmp_path / "oc20"
    subprocess.run([sys.executable, str(SCRIPT), "--output", str(output), "--systems", "2", "--frames", "2",
                    "--valid-systems", "1", "--valid-frames", "2", "--size", "2", "2", "3"],
                   check=True, capture_output=True, timeout=120)
    config = ROOT / "examples" / "oc20" / "config.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "molsym.train", str(config), "--output", str(tmp_path / "run"),
         "--set", "epochs=1", "--set", "progress=false",
         "--set", f"data.train={output / 'train.aselmdb'}", "--set", f"data.valid={output / 'valid.aselmdb'}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "4 training structures, 2 validation" in result.stdout
    assert (tmp_path / "run" / "best.pt").exists()


def load_script():
    spec = importlib.util.spec_from_file_location("oc20_make_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "options, message",
    [
        (["--size", "2", "2", "2", "--surface-layers", "3"], "--surface-layers"),
        (["--systems", "0"], "--systems"),
        (["--valid-seed", "0"], "--valid-seed"),
        (["--metals", "Au"], "invalid choice"),
    ],
)
def test_make_data_rejects_bad_options(tmp_path, capsys, options, message):
    script = load_script()
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--output", str(tmp_path), *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
