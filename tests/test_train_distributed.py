"""``torchrun --nproc_per_node 2`` on CPU (gloo) follows the loss curve of one process with the same global batch."""
from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from molsym.train.log import read_csv
from train_helpers import metric_columns, run_cli, tiny_config, write_config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun() -> str:
    """torchrun beside this Python (or on PATH); skips the test when there is none."""
    found = Path(sys.executable).with_name("torchrun")
    found = str(found) if found.exists() else shutil.which("torchrun")
    if found is None:
        pytest.skip("torchrun is not installed beside this Python")
    return found


def test_two_processes_match_one(tmp_path):
    torchrun = _torchrun()
    # EMA off: the logged curve is that of the raw weights; stage two from epoch 3 (2 of 3 epochs done)
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", epochs=3, ema=None,
                                                           data={"batch_size": 4}, stage_two={"start": 0.5}))
    single = run_cli("train", str(config), "--output", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "molsym.train", str(config), "--output", str(tmp_path / "two")]
    double = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = read_csv(tmp_path / "one" / "log.csv"), read_csv(tmp_path / "two" / "log.csv")
    assert len(one) == len(two) == 3 and [row["stage"] for row in two] == [1, 1, 2]
    for a, b in zip(metric_columns(one), metric_columns(two)):
        assert a.keys() == b.keys()
        for key in a:
            # same arithmetic up to the order of the gradient sum over ranks
            assert math.isclose(a[key], b[key], rel_tol=1e-9), (a["epoch"], key, a[key], b[key])
    # only rank 0 wrote: one log, one set of checkpoints, no stray files
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best.pt", "last.pt", "log.csv", "results.json"]


def test_two_processes_with_an_untrained_head(tmp_path):
    """A Hessian head without a loss term gets no gradient in any step; DDP must still train."""
    torchrun = _torchrun()
    model = {**tiny_config(tmp_path)["model"], "heads": {"hessian": {"channels": 2}}}
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", epochs=2, ema=None, model=model,
                                                           data={"batch_size": 4}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "molsym.train", str(config), "--output", str(tmp_path / "two")]
    double = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    assert len(read_csv(tmp_path / "two" / "log.csv")) == 2
