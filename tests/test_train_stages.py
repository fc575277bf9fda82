"""Two-stage training (``stage_two``): when the loss is reweighted, by which weights, and that a run killed
in either stage resumes to the same history. Runs on a mocked clock: 5 s per epoch, a 60 s budget, 12 epochs."""
from __future__ import annotations


import pytest
import torch

from molsym.train import loop
from molsym.train.cli import main
from molsym.train.config import ConfigError, validate_config
from molsym.train.log import read_csv
from molsym.train.stages import TwoStages
from train_helpers import StepClock, assert_same_history, tiny_config, write_config

LOSS = {"energy": 1.0, "forces": 10.0, "stress": 0.0}
STAGE_TWO = {"start": 0.5, "energy": 50.0, "forces": 5.0, "stress": None}
COSINE = {"type": "cosine", "min_lr": 1e-5, "warmup_epochs": 1, "fit_to_budget": True}


def test_stage_two_begins_at_its_fraction_of_steps_or_of_the_budget_whichever_comes_first():
    stages = TwoStages(LOSS, STAGE_TWO)
    assert stages.weights == LOSS
    assert not stages.due(steps=49, planned_steps=100, seconds=10.0, budget=None)
    assert stages.due(steps=50, planned_steps=100, seconds=10.0, budget=None)
    assert not stages.due(steps=10, planned_steps=100, seconds=29.0, budget=60.0)
    assert stages.due(steps=10, planned_steps=100, seconds=30.0, budget=60.0)  # the budget binds first
    stages.stage = 2
    assert stages.weights == {"energy": 50.0, "forces": 5.0, "stress": 0.0}  # null keeps stage one's stress
    assert not stages.due(steps=100, planned_steps=100, seconds=60.0, budget=60.0)  # no stage three
    off = TwoStages(LOSS, None)
    assert not off.enabled and not off.due(steps=100, planned_steps=100, seconds=1.0, budget=None)
    assert off.needs("forces") and not off.needs("stress")
    assert TwoStages(LOSS, {**STAGE_TWO, "stress": 1.0}).needs("stress")  # stage two's stress is computed


def test_config_is_off_unless_given_and_refuses_bad_settings(tmp_path):
    raw = tiny_config(tmp_path / "run")
    assert validate_config(raw)["stage_two"] is None
    assert validate_config({**raw, "stage_two": {}})["stage_two"] == {"start": 0.75, "energy": 1000.0,
                                                                     "forces": 100.0, "stress": None}
    for bad, message in (({"start": 1.0}, "stage_two.start: 1.0 must lie in (0, 1)"),
                         ({"energy": -1.0}, "stage_two.energy"),
                         ({"energy": 0.0, "forces": 0.0}, "every weight of stage two is 0"),
                         ({"swa_lr": 0.001}, "stage_two.swa_lr: unknown key")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate_config({**raw, "stage_two": bad})


def _config(tmp_path, name):
    config = tiny_config(tmp_path / name, epochs=1000, max_time=60.0, ema={"decay": 0.9}, schedule=COSINE,
                         loss=dict(LOSS), stage_two=dict(STAGE_TWO))
    return write_config(tmp_path / f"{name}.yaml", config)


def _loss(row: dict, weights: dict) -> float:
    """The validation loss from the row's RMSEs (meV/atom, meV/Å) and the loss weights."""
    return (weights["energy"] * (row["valid_energy_rmse_mev_atom"] / 1000) ** 2
            + weights["forces"] * (row["valid_forces_rmse_mev_a"] / 1000) ** 2)


def test_second_half_of_the_budget_trains_on_the_reweighted_loss_and_best_is_a_stage_two_model(tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setattr(loop, "clock", StepClock())
    assert main(["train", str(_config(tmp_path, "two"))]) == 0
    rows = read_csv(tmp_path / "two" / "log.csv")
    assert [row["stage"] for row in rows] == [1] * 6 + [2] * 6  # 30 of 60 s spent after epoch 6
    second = TwoStages(LOSS, STAGE_TWO).second
    for row in rows:
        weights = LOSS if row["stage"] == 1 else second
        assert row["valid_loss"] == pytest.approx(_loss(row, weights), rel=1e-9)
    best = torch.load(tmp_path / "two" / "best.pt", weights_only=True)["metadata"]
    stage_two_losses = [row["valid_loss"] for row in rows[6:]]
    assert best["epoch"] == 7 + stage_two_losses.index(min(stage_two_losses))
    assert best["best_valid_loss"] == min(stage_two_losses)


@pytest.mark.parametrize("killed_in_epoch", [7, 9])  # 7: just after the switch was saved; 9: well into stage two
def test_killed_run_resumes_in_its_stage_to_the_same_history(tmp_path, monkeypatch, killed_in_epoch):
    monkeypatch.setattr(loop, "clock", StepClock())
    assert main(["train", str(_config(tmp_path, "whole"))]) == 0
    monkeypatch.setattr(loop, "clock", StepClock(stop_after=(killed_in_epoch - 1) * 6 + 3))
    with pytest.raises(KeyboardInterrupt):
        main(["train", str(_config(tmp_path, "killed"))])
    training = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["training"]
    assert training["position"]["epoch"] == killed_in_epoch - 1 and training["stages"]["stage"] == 2
    monkeypatch.setattr(loop, "clock", StepClock())
    assert main(["train", str(_config(tmp_path, "killed")), "--resume"]) == 0
    whole, resumed = (read_csv(tmp_path / name / "log.csv") for name in ("whole", "killed"))
    assert_same_history(resumed, whole, 12)
