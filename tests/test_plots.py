"""molsym.train.plots: parity plots and learning curves are valid PNGs, written atomically, with input checks."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from molsym.train.plots import error_against_time, learning_curve, parity_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"


def assert_no_temporaries(directory) -> None:
    leftovers = [p.name for p in directory.rglob("*") if p.name.endswith(".tmp.png") or p.name.startswith(".")]
    assert not leftovers, leftovers


def test_parity_scatter(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=300)
    predicted = reference + 0.05 * rng.normal(size=300)
    target = tmp_path / "figures" / "nested" / "energy.png"
    written = parity_plot(reference, predicted, target, quantity="energy per atom", unit="eV/atom", title="valid")
    assert written == target
    assert_png(target)
    assert_no_temporaries(tmp_path)


def test_parity_hexbin_large(tmp_path):
    rng = np.random.default_rng(1)
    reference = rng.normal(size=50_000)
    predicted = reference + 0.1 * rng.normal(size=50_000)
    target = tmp_path / "forces.png"
    parity_plot(list(reference), predicted, target, quantity="force component", unit="eV/Å")
    assert_png(target)
    assert_no_temporaries(tmp_path)


def test_parity_overwrites_and_accepts_constant(tmp_path):
    target = tmp_path / "p.png"
    target.write_bytes(b"old")
    parity_plot([1.0, 1.0], [1.0, 1.0], target, quantity="energy", unit="eV")
    assert_png(target)
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize(
    "reference, predicted, message",
    [
        ([1.0, 2.0], [1.0], "reference has 2 values but predicted has 1"),
        ([], [], "empty"),
        ([1.0, math.nan], [1.0, 2.0], "reference holds 1 non-finite"),
        ([1.0, 2.0], [math.inf, 2.0], "predicted holds 1 non-finite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "must be 1-D"),
    ],
)
def test_parity_rejects_bad_input(tmp_path, reference, predicted, message):
    with pytest.raises(ValueError, match=message):
        parity_plot(reference, predicted, tmp_path / "bad.png", quantity="energy", unit="eV")
    assert not any(tmp_path.iterdir())


def test_learning_curve_full(tmp_path):
    history = [
        {
            "epoch": epoch,
            "lr": 1e-3 * 0.9**epoch,
            "train_loss": 1.0 / epoch,
            "valid_loss": 1.2 / epoch,
            "train_energy_rmse_mev_atom": 20.0 / epoch,
            "valid_energy_rmse_mev_atom": 25.0 / epoch,
            "train_forces_rmse_mev_a": 200.0 / epoch,
            "valid_forces_rmse_mev_a": 240.0 / epoch,
            "valid_forces_mae_mev_a": 150.0 / epoch,
        }
        for epoch in range(1, 21)
    ]
    target = tmp_path / "runs" / "curve.png"
    assert learning_curve(history, target, title="run") == target
    assert_png(target)
    assert_no_temporaries(tmp_path)


def test_learning_curve_missing_columns(tmp_path):
    history = [
        {"train_loss": 1.0},
        {"epoch": 2, "train_loss": 0.5, "valid_loss": None, "valid_energy_rmse_mev_atom": math.nan},
        {"epoch": 3, "train_loss": 0.25, "valid_loss": 0.4, "valid_energy_rmse_mev_atom": 12.0, "note": "x"},
        {"epoch": 4, "valid_forces_rmse_mev_a": -1.0},  # non-positive: linear axis
    ]
    target = learning_curve(history, tmp_path / "curve.png")
    assert_png(target)
    only_epochs = learning_curve([{"epoch": 1}, {"epoch": 2}], tmp_path / "empty_columns.png")
    assert_png(only_epochs)
    assert_no_temporaries(tmp_path)


def test_learning_curve_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        learning_curve([], tmp_path / "curve.png")
    assert not any(tmp_path.iterdir())


def test_import_does_not_load_matplotlib():
    code = "import sys, molsym.train, molsym.train.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_error_against_time(tmp_path):
    def history(speed):
        return [{"time_s": speed * k, "valid_forces_rmse_mev_a": 100.0 / math.sqrt(k),
                 "valid_energy_rmse_mev_atom": 5.0 / k if k != 3 else None} for k in range(1, 60)]

    target = tmp_path / "budget.png"
    assert error_against_time({"32 ch": history(6.0), "64 ch": history(11.0)}, target, title="3BPA") == target
    assert_png(target)
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("runs, split, message", [
    ({}, "valid", "no runs"),
    ({"a": [{"time_s": 1.0, "valid_forces_rmse_mev_a": 2.0}]}, "holdout", "split must be"),
    ({"a": [{"time_s": None, "valid_forces_rmse_mev_a": 2.0}]}, "valid", "no finite"),
])
def test_error_against_time_rejects_bad_input(tmp_path, runs, split, message):
    with pytest.raises(ValueError, match=message):
        error_against_time(runs, tmp_path / "x.png", split=split)
