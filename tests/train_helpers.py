"""Small training configs shared by the training tests (tiny models, the shipped 3BPA subset)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "examples" / "data" / "3bpa_subset.xyz"
# isolated-atom energies (eV) of the 3BPA data's DFT
E0_3BPA = {1: -13.587222780835477, 6: -1029.4889999855063, 7: -1484.9814568572233, 8: -2041.9816003861047}
TINY_MODEL = {"family": "tensornet", "channels": 8, "layers": 1, "num_radial": 8, "cutoff": 4.5}


def tiny_config(output: Path, **sections) -> dict:
    """A complete raw config training a 1-layer, 8-channel TensorNet on the 20-frame 3BPA subset."""
    config = {
        "output": str(output),
        "seed": 3,
        "epochs": 3,
        "progress": False,
        "tensorboard": False,
        "model": dict(TINY_MODEL),
        "data": {"train": str(SUBSET), "valid_fraction": 0.2, "batch_size": 4, "valid_batch_size": 8,
                 "e0": dict(E0_3BPA)},
        "loss": {"energy": 1.0, "forces": 10.0},
        "optimizer": {"lr": 0.01},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def molsym_command(*args: str) -> list[str]:
    """``python -m molsym.train.cli`` equivalent of the ``molsym`` console script."""
    return [sys.executable, "-c", "import sys; from molsym.train.cli import main; sys.exit(main())", *args]


def run_cli(*args: str, timeout: float = 300, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(molsym_command(*args), capture_output=True, text=True, timeout=timeout, env=env)


def metric_columns(history: list[dict]) -> list[dict]:
    """History rows without the wall-clock columns (which differ between runs)."""
    return [{k: v for k, v in row.items() if k not in ("time_s", "structures_per_s")} for row in history]


def assert_same_history(resumed: list[dict], reference: list[dict], epochs: int) -> None:
    """A resumed run's log rows equal the uninterrupted run's (wall-clock columns aside), to 1e-12."""
    assert len(resumed) == len(reference) == epochs
    for got, want in zip(metric_columns(resumed), metric_columns(reference)):
        assert got.keys() == want.keys()
        for key in want:
            assert math.isclose(got[key], want[key], rel_tol=1e-12, abs_tol=1e-15), (got["epoch"], key)


class StepClock:
    """A clock that advances ``tick`` seconds at every reading; raises ``stop_after`` readings in (a kill)."""

    def __init__(self, tick: float = 1.0, stop_after: int | None = None):
        self.now, self.tick, self.readings, self.stop_after = 0.0, tick, 0, stop_after

    def __call__(self) -> float:
        self.readings += 1
        if self.stop_after is not None and self.readings > self.stop_after:
            raise KeyboardInterrupt("killed")
        self.now += self.tick
        return self.now
