"""Learning-rate schedules: the cosine fitted to a max_time budget (on a mocked clock), and resuming such a run."""
from __future__ import annotations

import math

import pytest
import torch

from molsym.train import loop
from molsym.train.cli import main
from molsym.train.log import read_csv
from molsym.train.schedule import LearningRate
from train_helpers import StepClock, assert_same_history, tiny_config, write_config

COSINE = {"type": "cosine", "min_lr": 1e-5, "factor": 0.5, "patience": 1, "threshold": 0.0,
          "warmup_epochs": 1, "warmup_start": 0.01, "fit_to_budget": True}


def _schedule(**changes) -> tuple[LearningRate, torch.optim.Optimizer]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return LearningRate(optimizer, {**COSINE, **changes}, 0.01, steps_per_epoch=10, epochs=100), optimizer


def _run(lr, optimizer, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        lr.step()
        values.append(optimizer.param_groups[0]["lr"])
    return values


def test_fit_stretches_the_cosine_over_the_budget_both_ways_and_the_lr_never_rises():
    lr, optimizer = _schedule()
    assert lr.total_steps == 1000
    values = _run(lr, optimizer, 10)  # the warm-up epoch
    lr.fit_to_budget(steps=10, seconds=5.0, budget=100.0)  # 2 steps/s: 95 s leave 190 steps
    assert lr.total_steps == 200
    values += _run(lr, optimizer, 40)
    lr.fit_to_budget(steps=50, seconds=15.0, budget=100.0)  # faster: 85 s x 10/3 steps/s = 283 more steps
    assert lr.total_steps == 50 + 284
    values += _run(lr, optimizer, 50)
    lr.fit_to_budget(steps=100, seconds=60.0, budget=100.0)  # slower: 40 s x 5/3 = 66.7 more steps
    assert lr.total_steps == 100 + 67
    values += _run(lr, optimizer, 67)
    assert values[-1] == pytest.approx(1e-5) and values[-2] > 1e-5
    assert all(b <= a for a, b in zip(values[10:], values[11:]))
    lr.fit_to_budget(steps=167, seconds=100.0, budget=100.0)  # budget spent: the cosine stays ended
    assert _run(lr, optimizer, 3)[-1] == pytest.approx(1e-5)


def test_fit_keeps_the_planned_length_when_the_budget_allows_it_and_only_fits_cosines():
    lr, _ = _schedule()
    lr.fit_to_budget(steps=10, seconds=1.0, budget=1e6)
    assert lr.total_steps == 1000
    for kind in ("plateau", "constant"):
        other, _ = _schedule(type=kind)
        other.fit_to_budget(steps=10, seconds=5.0, budget=100.0)
        assert other.total_steps == 1000 and other.fit_budget is None
    off, _ = _schedule(fit_to_budget=False)
    off.fit_to_budget(steps=10, seconds=5.0, budget=100.0)
    assert off.total_steps == 1000


def test_planned_cosine_is_the_closed_form():
    lr, optimizer = _schedule()
    values = _run(lr, optimizer, 1000)
    for s in (10, 255, 505, 999):  # values[s - 1] is the LR after s steps
        progress = (s - 10) / 990
        assert values[s - 1] == pytest.approx(1e-5 + (0.01 - 1e-5) * 0.5 * (1 + math.cos(math.pi * progress)),
                                              rel=1e-12)


def test_restarting_the_plateau_judges_only_the_new_loss_and_keeps_the_reductions():
    lr, optimizer = _schedule(type="plateau", warmup_epochs=0)  # patience 1, factor 0.5
    for loss in (1.0, 2.0, 2.0):  # two evaluations without improvement: one reduction
        lr.report(loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
    lr.restart_plateau()  # e.g. stage two: a loss 10x larger is not a plateau against the old best
    for loss in (10.0, 9.0, 8.0):
        lr.report(loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005) and lr.best == 8.0


def test_fitted_schedule_is_saved_and_restored():
    lr, optimizer = _schedule()
    _run(lr, optimizer, 20)
    lr.fit_to_budget(steps=20, seconds=5.0, budget=100.0)
    again, again_optimizer = _schedule()
    again.load_state_dict(lr.state_dict())
    assert again.total_steps == lr.total_steps == 20 + 380 and again.fit_budget == 100.0
    assert _run(again, again_optimizer, 30) == _run(lr, optimizer, 30)
    longer, longer_optimizer = _schedule()
    longer.planned_steps = 2000  # resumed with twice the epochs: re-planned from where it is, no jump
    longer.load_state_dict(lr.state_dict())
    assert longer.total_steps == 2000 and longer_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    legacy = {k: v for k, v in lr.state_dict().items()
              if k not in ("planned_steps", "progress", "rate", "fit_budget", "guard_scale")}
    old, _ = _schedule()
    old.load_state_dict(legacy)  # a run saved before progress was tracked: the cosine over its epochs
    assert old.total_steps == 1000 and old.progress == pytest.approx(40 / 990)


BUDGET = 60.0  # mocked seconds: 4 steps per epoch read the clock 6 times (5 s of training per epoch) -> 12 epochs


def _config(tmp_path, name, **schedule):
    config = tiny_config(tmp_path / name, epochs=1000, max_time=BUDGET, ema={"decay": 0.9},
                         schedule={**COSINE, **schedule})
    return write_config(tmp_path / f"{name}.yaml", config)


def test_cosine_anneals_within_a_binding_time_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "clock", StepClock())
    assert main(["train", str(_config(tmp_path, "fitted"))]) == 0
    rows = read_csv(tmp_path / "fitted" / "log.csv")
    assert len(rows) == 12 and rows[-1]["time_s"] == BUDGET  # the budget ended the run at an epoch's end
    assert rows[-1]["lr"] == pytest.approx(1e-5)  # annealed: 4 + 55 s x 4/5 steps/s = 48 steps, 12 epochs
    lrs = [row["lr"] for row in rows[1:]]
    assert all(b < a for a, b in zip(lrs, lrs[1:]))
    schedule = torch.load(tmp_path / "fitted" / "last.pt", weights_only=True)["training"]["schedule"]
    assert schedule["progress"] == pytest.approx(1.0) and schedule["step_count"] == 48
    monkeypatch.setattr(loop, "clock", StepClock())
    assert main(["train", str(_config(tmp_path, "unfitted", fit_to_budget=False))]) == 0
    unfitted = read_csv(tmp_path / "unfitted" / "log.csv")
    assert len(unfitted) == 12 and unfitted[-1]["lr"] > 0.9 * 0.01  # epochs' cosine: barely started


def test_killed_fitted_run_resumes_to_the_same_history(tmp_path, monkeypatch):
    """Killed in epoch 7 (after the fit), resumed: the same per-epoch metrics as the uninterrupted run."""
    monkeypatch.setattr(loop, "clock", StepClock())
    assert main(["train", str(_config(tmp_path, "whole"))]) == 0
    monkeypatch.setattr(loop, "clock", StepClock(stop_after=6 * 6 + 3))
    with pytest.raises(KeyboardInterrupt):
        main(["train", str(_config(tmp_path, "killed"))])
    position = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["training"]["position"]
    assert position["epoch"] == 6
    monkeypatch.setattr(loop, "clock", StepClock())
    assert main(["train", str(_config(tmp_path, "killed")), "--resume"]) == 0
    whole, resumed = (read_csv(tmp_path / name / "log.csv") for name in ("whole", "killed"))
    assert_same_history(resumed, whole, 12)
