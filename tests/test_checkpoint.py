"""Checkpoints: exact round trips, atomic writes, and safe refusal of corrupt, foreign or malicious files."""
from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

import molsym
from molsym import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
BPA = ROOT / "examples" / "data" / "3bpa_subset.xyz"


def small_model(dtype=torch.float64, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = {"family": "tensornet", "elements": [1, 6, 7, 8], "channels": 8, "layers": 2, "num_radial": 8,
              **overrides}
    model = molsym.Potential.from_config(config).to(dtype)
    model.set_energy_reference(e0={1: -13.6, 6: -1029.5}, scale=0.7, shift=0.05)
    return model.eval()


def structures():
    return ase.io.read(BPA, index=":3")


class Marker:
    """Unpickling this object would create a file (stands in for arbitrary code execution)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_round_trip_gives_identical_predictions(tmp_path, dtype):
    model = small_model(dtype)
    path = tmp_path / "sub" / "model.pt"
    molsym.save(model, path, {"epoch": 7, "note": "round trip", "losses": [0.1, 0.2], "best": torch.tensor([1.0])})
    loaded = molsym.load(path)
    assert not loaded.training
    assert next(loaded.parameters()).dtype == dtype
    assert loaded.config == model.config
    assert loaded.metadata["epoch"] == 7 and loaded.metadata["losses"] == [0.1, 0.2]
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    before, after = model.predict(structures()), loaded.predict(structures())
    np.testing.assert_array_equal(after["energy"], before["energy"])
    for f_before, f_after in zip(before["forces"], after["forces"]):
        np.testing.assert_array_equal(f_after, f_before)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model = small_model()
    path = tmp_path / "model.pt"
    molsym.save(model, path)
    first = path.read_bytes()
    with pytest.raises(TypeError, match="plain data"):
        molsym.save(model, path, {"bad": object()})
    assert path.read_bytes() == first  # a failed save leaves the previous checkpoint intact
    molsym.save(small_model(seed=1), path)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # the usual permissions of a new file, not a temp file's 0600


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        molsym.load(tmp_path / "nowhere.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        molsym.load(tmp_path)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "model.pt"
    molsym.save(small_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a torch file"):
        molsym.load(path)


@pytest.mark.parametrize("content", [b"", b"hello world" * 10, b"PK\x03\x04garbage"], ids=["empty", "text", "bad-zip"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt|unsafe"):
        molsym.load(path)


def test_pickled_object_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "code-was-executed"
    model = small_model()
    # the payload of a real checkpoint, with a malicious object hidden in the metadata
    payload = {"format": 1, "config": model.config, "state_dict": model.state_dict(), "metadata": {"x": Marker(marker)}}
    zipped = tmp_path / "zip.pt"
    torch.save(payload, zipped)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Marker(marker), protocol=2))
    for path in (zipped, raw):
        with pytest.raises(CheckpointError, match="unsafe or corrupt.*refused without being unpickled") as info:
            molsym.load(path)
        assert "GLOBAL" in str(info.value)  # names what was blocked
        assert "weights_only` set to `False`" not in str(info.value)  # and gives no advice to load it unsafely
        assert "safe_globals" not in str(info.value)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Marker(marker)))  # the marker does work when unpickled unsafely
    assert marker.exists()


def test_not_a_molsym_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a molsym checkpoint"):
        molsym.load(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a molsym checkpoint"):
        molsym.load(path)
    model = small_model()
    torch.save({"format": 99, "config": model.config, "state_dict": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="format 99, newer"):
        molsym.load(path)
    torch.save({"format": 1, "config": {"family": "nope", "elements": [1]}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="invalid model config.*unknown family"):
        molsym.load(path)


def test_state_dict_that_does_not_match_the_config(tmp_path):
    path = tmp_path / "model.pt"
    model = small_model()
    state = model.state_dict()
    wider = dict(model.config, channels=16)
    torch.save({"format": 1, "config": wider, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"does not match its config \(\d+ shape mismatches: embedding"):
        molsym.load(path)
    name = next(iter(state))
    partial = {k: v for k, v in state.items() if k != name}
    torch.save({"format": 1, "config": model.config, "state_dict": partial}, path)
    with pytest.raises(CheckpointError, match=f"does not match its config \\(1 missing keys: {name}\\)"):
        molsym.load(path)
    torch.save({"format": 1, "config": model.config, "state_dict": {**state, "extra.weight": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: extra\.weight\)"):
        molsym.load(path)


# --- integrity: checksum, non-finite weights, interrupted writes --------------------------------


def _flip_bytes_inside_a_weight(path: Path, model) -> None:
    """Change bytes in the middle of the largest tensor's stored data, leaving the zip readable."""
    import zipfile

    name, tensor = max(model.state_dict().items(), key=lambda item: item[1].numel())
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    start = data.find(raw)
    assert start > 0, "the weights are stored uncompressed in torch's zip format"
    middle = start + len(raw) // 2
    data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:  # still a valid zip (torch does not check CRCs on load)
        assert archive.namelist()


def test_flipped_bytes_inside_the_weights_are_refused(tmp_path):
    model = small_model()
    path = tmp_path / "model.pt"
    molsym.save(model, path)
    _flip_bytes_inside_a_weight(path, model)
    raw = torch.load(path, weights_only=True)  # torch itself reads the altered weights silently
    assert any(not torch.equal(raw["state_dict"][k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="do not match the sha256 checksum"):
        molsym.load(path)


def test_checksum_covers_names_dtypes_and_shapes():
    from molsym.checkpoint import state_dict_checksum

    state = {"a": torch.arange(6.0), "b": torch.ones(2)}
    reference = state_dict_checksum(state)
    assert state_dict_checksum({"b": torch.ones(2), "a": torch.arange(6.0)}) == reference  # order-free
    assert state_dict_checksum({"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}) != reference
    assert state_dict_checksum({"a": torch.arange(6.0).double(), "b": torch.ones(2)}) != reference
    assert state_dict_checksum({"c": torch.arange(6.0), "b": torch.ones(2)}) != reference


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weight_is_refused_naming_the_parameter(tmp_path, value):
    model = small_model()
    name = next(k for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() > 1)
    with torch.no_grad():
        model.state_dict()[name].view(-1)[1] = value
    path = tmp_path / "model.pt"
    molsym.save(model, path)  # the checksum matches: the NaN is in the weights themselves
    with pytest.raises(CheckpointError, match=f"non-finite weights.*{name}"):
        molsym.load(path)


def test_checkpoint_without_checksum_still_loads(tmp_path):
    model = small_model()
    payload = molsym.checkpoint.model_payload(model)
    del payload["checksum"]
    path = tmp_path / "old.pt"
    torch.save(payload, path)
    loaded = molsym.load(path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path):
    path = tmp_path / "last.pt"
    stale = tmp_path / ".last.pt.0123456789abcdef.tmp"
    live = tmp_path / ".last.pt.fedcba9876543210.tmp"  # a concurrent writer's, just modified
    other = tmp_path / ".best.pt.0123456789abcdef.tmp"  # another checkpoint's
    lookalike = tmp_path / ".last.pt.not-hex-digits.tmp"
    for file in (stale, live, other, lookalike):
        file.write_bytes(b"partial")
    old = os.stat(stale).st_mtime - 2 * molsym.checkpoint.STALE_TEMPORARY_SECONDS
    for file in (stale, other, lookalike):
        os.utime(file, (old, old))
    molsym.save(small_model(), path)
    assert sorted(os.listdir(tmp_path)) == sorted(["last.pt", live.name, other.name, lookalike.name])
    molsym.load(path)


def test_temporary_file_of_a_killed_write_is_removed_later(tmp_path):
    """A writer killed (SIGKILL) between writing and renaming leaves its temporary file; a later
    write removes it once it is stale, and the previous checkpoint survives throughout."""
    import subprocess
    import sys

    path = tmp_path / "last.pt"
    molsym.save(small_model(), path)
    before = path.read_bytes()
    script = (
        "import os, signal, sys, torch, molsym\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.manual_seed(1)\n"
        "m = molsym.Potential.from_config({'family': 'tensornet', 'elements': [1], 'channels': 4, 'layers': 1})\n"
        "molsym.save(m, sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=120)
    assert result.returncode == -9
    leftovers = [name for name in os.listdir(tmp_path) if name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".tmp")
    assert path.read_bytes() == before
    old = os.stat(tmp_path / leftovers[0]).st_mtime - 2 * molsym.checkpoint.STALE_TEMPORARY_SECONDS
    os.utime(tmp_path / leftovers[0], (old, old))
    molsym.save(small_model(seed=2), path)
    assert os.listdir(tmp_path) == ["last.pt"]
