"""Learning-rate schedules: the cosine fitted to a max_time budget (on a mocked clock), and resuming such a run."""
from __future__ import annotations

import math

import pytest
import torch

from molsym.train import loop
from molsym.train.cli import main
from molsym.train.log import read_csv
from molsym.train.schedule import LearningRate
from train_helpers import metric_columns, tiny_config, write_config

COSINE = {"type": "cosine", "min_lr": 1e-5, "factor": 0.5, "patience": 1, "threshold": 0.0,
          "warmup_epochs": 1, "warmup_start": 0.01, "fit_to_budget": True}


def _schedule(**changes) -> tuple[LearningRate, torch.optim.Optimizer]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return LearningRate(optimizer, {**COSINE, **changes}, 0.01, steps_per_epoch=10, epochs=100), optimizer


def test_fit_shortens_the_cosine_to_the_budget_and_never_lengthens_it():
    lr, optimizer = _schedule()
    assert lr.total_steps == 1000
    for _ in range(10):
        lr.step()
    lr.fit_to_budget(steps=10, seconds=5.0, budget=100.0)  # 2 steps/s: 10 + 95 s x 2 = 200 steps fit
    assert lr.total_steps == 200
    lr.fit_to_budget(steps=10, seconds=1.0, budget=100.0)  # faster now: the cosine is not lengthened
    assert lr.total_steps == 200
    lr.fit_to_budget(steps=10, seconds=10.0, budget=100.0)  # slower: shortened to 10 + 90 x 1
    assert lr.total_steps == 100
    values = []
    while lr.step_count < 100:
        lr.step()
        values.append(optimizer.param_groups[0]["lr"])
    assert values[-1] == pytest.approx(1e-5) and all(b <= a for a, b in zip(values, values[1:]))
    lr.fit_to_budget(steps=100, seconds=10.0, budget=1000.0)  # another budget (a resume): fitted afresh
    assert lr.total_steps == 1000 and lr.fitted_steps == 100 + 990 * 10


def test_fit_keeps_the_planned_length_when_the_budget_allows_it_and_only_fits_cosines():
    lr, _ = _schedule()
    lr.fit_to_budget(steps=10, seconds=1.0, budget=1e6)
    assert lr.total_steps == 1000
    for kind in ("plateau", "constant"):
        other, _ = _schedule(type=kind)
        other.fit_to_budget(steps=10, seconds=5.0, budget=100.0)
        assert other.total_steps == 1000 and other.fitted_steps is None
    off, _ = _schedule(fit_to_budget=False)
    off.fit_to_budget(steps=10, seconds=5.0, budget=100.0)
    assert off.total_steps == 1000


def test_fitted_length_is_saved_and_restored():
    lr, _ = _schedule()
    lr.fit_to_budget(steps=10, seconds=5.0, budget=100.0)
    again, _ = _schedule()
    again.load_state_dict(lr.state_dict())
    assert again.total_steps == 200 and again.fit_budget == 100.0
    legacy = {k: v for k, v in lr.state_dict().items() if k not in ("fitted_steps", "fit_budget", "guard_scale")}
    old, _ = _schedule()
    old.load_state_dict(legacy)  # a run saved before budget fitting resumes with the planned length
    assert old.total_steps == 1000


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
    assert schedule["fitted_steps"] == 48 and schedule["step_count"] == 48
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
    assert len(whole) == len(resumed) == 12
    for got, want in zip(metric_columns(resumed), metric_columns(whole)):
        assert got.keys() == want.keys()
        for key in want:
            assert math.isclose(got[key], want[key], rel_tol=1e-12, abs_tol=1e-15), (got["epoch"], key)
