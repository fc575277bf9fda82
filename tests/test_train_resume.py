"""A run killed with SIGKILL, or stopped by its time budget mid-epoch, resumes to the same metrics as a run
that was never interrupted (same process settings: float64, one thread)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from molsym.train.log import read_csv
from train_helpers import assert_same_history, molsym_command, run_cli, tiny_config, write_config

EPOCHS = 8


def _config(tmp_path, name, **sections):
    config = tiny_config(tmp_path / name, epochs=EPOCHS, ema={"decay": 0.9},
                         schedule={"type": "plateau", "patience": 0, "factor": 0.5, "warmup_epochs": 1}, **sections)
    return write_config(tmp_path / f"{name}.yaml", config)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    result = run_cli("train", str(_config(root, "ref")))
    assert result.returncode == 0, result.stderr
    return read_csv(root / "ref" / "log.csv")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, uninterrupted):
    config = _config(tmp_path, "killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(molsym_command("train", str(config)), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["training"]["position"]["epoch"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(last, weights_only=True)["training"]["position"]["epoch"]
    assert 2 <= killed_at < EPOCHS
    result = run_cli("train", str(config), "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_history(read_csv(tmp_path / "killed" / "log.csv"), uninterrupted, EPOCHS)


def test_time_budget_stops_mid_epoch_and_resume_continues_exactly(tmp_path, uninterrupted):
    config = _config(tmp_path, "budget")
    result = run_cli("train", str(config), "--set", "max_time=0.001")
    assert result.returncode == 0, result.stderr
    assert "time budget" in result.stdout
    position = torch.load(tmp_path / "budget" / "last.pt", weights_only=True)["training"]["position"]
    assert position["epoch"] == 0 and position["step_in_epoch"] == 1  # stopped after the first step
    result = run_cli("train", str(config), "--resume", "--set", "max_time=null")
    assert result.returncode == 0, result.stderr
    assert_same_history(read_csv(tmp_path / "budget" / "log.csv"), uninterrupted, EPOCHS)
