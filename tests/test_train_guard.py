"""The divergence guard: a provoked loss spike is rolled back and the run recovers; persistent non-finite
losses stop training with the step and its frames named, good checkpoints kept and a non-zero exit."""
from __future__ import annotations

import math

import pytest
import torch

import molsym
from molsym.train import loop
from molsym.train.cli import main
from molsym.train.guard import GOOD, NONFINITE, SPIKE, LossGuard, frame_origin
from molsym.train.log import read_csv
from molsym.train.schedule import LearningRate
from train_helpers import SUBSET, tiny_config, write_config

SETTINGS = {"factor": 10.0, "window": 5, "min_steps": 3, "lr_factor": 0.5, "max_spikes": 2, "max_nonfinite": 3}
EPOCHS = 10
SPIKE_STEPS = range(16, 19)  # optimiser steps (4 per epoch) run at 1e4 x the learning rate: epoch 5


def test_judging_spikes_and_non_finite_losses():
    guard = LossGuard(SETTINGS)
    assert [guard.judge(loss, 1.0) for loss in (5.0, 4.0, 3.0)] == [GOOD] * 3  # fewer than min_steps: no level
    assert guard.level() == 4.0
    assert guard.judge(39.0, 1.0) == GOOD and guard.judge(41.0, 1.0) == GOOD  # level 4.0: 39 < 40; then 41 < 50
    guard = LossGuard(SETTINGS)
    for loss in (5.0, 4.0, 3.0):
        guard.judge(loss, 1.0)
    assert guard.judge(1e3, 1.0) == SPIKE and guard.judge(1e3, 1.0) == SPIKE
    assert guard.judge(1e3, 1.0) == GOOD  # max_spikes in one episode: the level has moved, the episode closes
    assert guard.level() == 1e3 or len(guard.recent) < SETTINGS["min_steps"]
    assert guard.judge(math.nan, 1.0) == NONFINITE and guard.judge(1.0, math.inf) == NONFINITE
    assert not guard.stopped() and guard.judge(math.inf, 1.0) == NONFINITE and guard.stopped()
    # two episodes (two spikes, then three non-finite steps): the learning rate was cut twice, not five times
    assert guard.total == {SPIKE: 2, NONFINITE: 3} and guard.episodes == 2 and guard.lr_scale == 0.5 ** 2
    restored = LossGuard(SETTINGS)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()


def test_restarting_the_level_accepts_a_reweighted_loss_without_a_spike():
    guard = LossGuard(SETTINGS)
    for loss in (5.0, 4.0, 3.0):
        guard.judge(loss, 1.0)
    guard.restart_level()  # the loss was redefined (stage two's weights): its scale is unknown again
    assert guard.level() == math.inf
    assert [guard.judge(loss, 1.0) for loss in (400.0, 300.0, 500.0)] == [GOOD] * 3
    assert guard.level() == 400.0 and guard.total == {SPIKE: 0, NONFINITE: 0} and guard.lr_scale == 1.0


def test_a_burst_of_spikes_cuts_the_learning_rate_once():
    """Spikes between good steps (the pattern that once halved the LR eleven times in thirteen steps) form one
    episode: one cut; once the episode has closed (``window`` good steps in a row) the next spike cuts again."""
    guard = LossGuard({**SETTINGS, "max_spikes": 5})
    for loss in (1.0, 1.1, 0.9, 1.0):
        assert guard.judge(loss, 1.0) == GOOD
    for _ in range(5):
        assert guard.judge(30.0, 1.0) == SPIKE and guard.judge(1.0, 1.0) == GOOD
    assert guard.total[SPIKE] == 5 and guard.episodes == 1 and guard.lr_scale == 0.5
    assert guard.judge(30.0, 1.0) == GOOD  # the sixth spike of the episode: the level has moved
    for loss in (1.0,) * 6:  # a new window, past min_steps: calm again
        assert guard.judge(loss, 1.0) == GOOD
    assert guard.judge(30.0, 1.0) == SPIKE and guard.episodes == 2 and guard.lr_scale == 0.25


def test_repeated_events_roll_back_to_a_calm_state_before_the_episode():
    """The first event of an episode restores the state before the last good step; a further event of the
    same episode restores a calm state at least ``window`` good steps older, and the LR is cut once."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    guard = LossGuard(SETTINGS)  # window 5
    states = []

    def step():
        optimizer.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()

    def good_step():
        assert guard.judge(1.0, 1.0) == GOOD
        guard.accept(model, optimizer, None)
        states.append(model.weight.detach().clone())
        step()

    for _ in range(12):
        good_step()
    assert guard.judge(100.0, 1.0) == SPIKE and guard.cut
    assert "last good step" in guard.roll_back(model, optimizer, None)
    assert torch.equal(model.weight, states[11])
    good_step()  # one good step does not close the episode
    assert guard.judge(100.0, 1.0) == SPIKE and not guard.cut
    assert "calm state" in guard.roll_back(model, optimizer, None)
    # the candidate taken at good step 0 became the calm state at step 5, the one taken at 5 at step 10
    assert torch.equal(model.weight, states[5]) and len(states) - 1 - 5 >= SETTINGS["window"]
    assert guard.episodes == 1 and guard.lr_scale == 0.5
    step()  # the restored state can be trained on and restored again
    assert guard.judge(math.nan, 1.0) == NONFINITE and not guard.cut
    guard.roll_back(model, optimizer, None)
    assert torch.equal(model.weight, states[5])
    restored = LossGuard(SETTINGS)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict() and restored.episode_events == 3


def test_snapshot_restores_model_optimizer_and_average_again_and_again():
    from molsym.train.ema import WeightAverage
    from molsym.train.guard import Snapshot

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, amsgrad=True)
    ema = WeightAverage(model, 0.9)

    def step():
        optimizer.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
        ema.update(model)

    def state():
        return ([p.detach().clone() for p in model.parameters()],
                {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()},
                {k: v.clone() for k, v in ema.shadow.items()}, ema.updates)

    def same(a, b):
        flat = lambda s: [*s[0], *s[1].values(), *s[2].values()]  # noqa: E731
        return a[3] == b[3] and all(torch.equal(x, y) for x, y in zip(flat(a), flat(b)))

    snapshot = Snapshot()
    step()
    for _ in range(3):  # take, damage, restore: each restore gives back the state of the last take
        snapshot.take(model, optimizer, ema)
        taken = state()
        step()
        step()
        assert not same(state(), taken)
        snapshot.restore(model, optimizer, ema)
        assert same(state(), taken)
        step()


def test_guard_lowers_the_learning_rate_never_below_min_lr():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = {"type": "constant", "min_lr": 1e-3, "factor": 0.5, "patience": 1, "threshold": 0.0,
                "warmup_epochs": 0, "warmup_start": 0.01, "fit_to_budget": True}
    lr = LearningRate(optimizer, schedule, 0.1, steps_per_epoch=4, epochs=2)
    lr.guard_scale = 0.25
    lr.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    lr.guard_scale = 1e-6
    lr.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_frame_origin_through_subsets_and_concatenation():
    from torch.utils.data import ConcatDataset, Subset, TensorDataset

    files = [TensorDataset(torch.zeros(n)) for n in (3, 4, 5)]
    dataset = Subset(ConcatDataset([files[0], ConcatDataset([files[1], files[2]])]), [2, 3, 11])
    assert [frame_origin(dataset, i) for i in range(3)] == [(0, 2), (1, 0), (2, 4)]


def _spiking(monkeypatch, steps=SPIKE_STEPS, factor=1e4):
    """Run a few optimiser steps at ``factor`` x the scheduled learning rate."""
    original = LearningRate.base_value

    def base_value(self):
        value = original(self)
        return value * factor if self.step_count in steps else value

    monkeypatch.setattr(LearningRate, "base_value", base_value)


def _config(tmp_path, name, **sections):
    config = tiny_config(tmp_path / name, **{"epochs": EPOCHS, "guard": dict(SETTINGS), **sections})
    return write_config(tmp_path / f"{name}.yaml", config)


def test_spike_without_guard_is_real(tmp_path, monkeypatch):
    """The provoked spike: without the guard the loss of the epoch after it jumps far above the loss before it."""
    _spiking(monkeypatch)
    assert main(["train", str(_config(tmp_path, "unguarded", guard=None))]) == 0
    rows = read_csv(tmp_path / "unguarded" / "log.csv")
    before, after = rows[3]["train_loss"], rows[5]["train_loss"] if "train_loss" in rows[5] else math.inf
    assert not after < 100 * before


def test_guard_rolls_the_spike_back_and_the_run_recovers(tmp_path, monkeypatch, capsys):
    assert main(["train", str(_config(tmp_path, "calm"))]) == 0
    calm = read_csv(tmp_path / "calm" / "log.csv")
    assert sum(row["guard_spikes"] + row["guard_nonfinite"] for row in calm) == 0
    _spiking(monkeypatch)
    assert main(["train", str(_config(tmp_path, "guarded"))]) == 0
    out = capsys.readouterr().out
    rows = read_csv(tmp_path / "guarded" / "log.csv")
    assert len(rows) == EPOCHS and all(math.isfinite(row["train_loss"]) and math.isfinite(row["valid_loss"])
                                       for row in rows)
    events = sum(row["guard_spikes"] + row["guard_nonfinite"] for row in rows)
    assert events >= 1 and rows[4]["guard_spikes"] + rows[4]["guard_nonfinite"] >= 1
    assert "rolled back" in out and "divergence guard:" in out
    # every step before the spike is the calm run's; the run then goes on learning from the restored weights
    assert rows[3]["train_loss"] == pytest.approx(calm[3]["train_loss"], rel=1e-12)
    assert rows[-1]["train_loss"] < rows[3]["train_loss"]
    assert rows[-1]["valid_loss"] < 2.0 * calm[-1]["valid_loss"]


def test_persistent_non_finite_losses_stop_training(tmp_path, monkeypatch, capsys):
    """From the 7th step on every loss is NaN: three in a row stop the run at epoch 3, step 1, with its frames
    named, last.pt as epoch 2 wrote it, a best.pt of finite weights and a non-zero exit."""
    from molsym.train.config import load_config
    from molsym.train.distributed import World

    config = _config(tmp_path, "nan", epochs=4)
    steps = []
    original = loop.weighted_loss

    def poisoned(*args, **kwargs):
        steps.append(1)
        loss = original(*args, **kwargs)
        return loss * math.nan if len(steps) >= 7 else loss

    monkeypatch.setattr(loop, "weighted_loss", poisoned)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "training diverged: 3 non-finite steps in a row" in err and "epoch 3, step 1 of 4" in err
    probe = loop.Run(load_config(config) | {"output": str(tmp_path / "probe")}, World(), resume=False)
    probe.sampler.set_epoch(2)
    for position in probe.sampler.global_batches()[0]:
        part, index = frame_origin(probe.splits.train, position)
        assert part == 0 and f"{SUBSET} frame {index}" in err
    out = tmp_path / "nan"
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["training"]["position"] == {**last["training"]["position"], "epoch": 2, "step_in_epoch": 0}
    assert all(torch.isfinite(v).all() for v in last["training"]["model"].values() if v.is_floating_point())
    best = molsym.load(out / "best.pt")
    assert all(torch.isfinite(v).all() for v in best.state_dict().values() if v.is_floating_point())
    assert [row["epoch"] for row in read_csv(out / "log.csv")] == [1, 2]
