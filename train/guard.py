"""Divergence guard: loss spikes and non-finite losses are rolled back instead of trained on.

Before every optimiser step the guard judges the step's training loss L
(this rank's share summed over the ranks, so every rank decides alike) and
the gradient's global norm:

- **non-finite**: L or the gradient norm is NaN or infinite;
- **spike**: L > ``factor`` x the median of the last ``window`` accepted
  losses (judged once at least ``min_steps`` losses were accepted);
- otherwise **good**: the step is taken and L joins the running window.

A non-finite step or a spike is an *event*; its batch is skipped and the
model, the optimiser and the weight average are rolled back. Events come in
*episodes*: an episode opens with an event and closes after ``window`` good
steps in a row. Per episode:

- the learning rate is multiplied by ``lr_factor`` once, at its first event,
  for the rest of the run (never below the schedule's ``min_lr``): a burst
  of spikes lowers the rate once, not once per spike;
- the first event rolls back to the state before the last good step (a
  spike means the weights that produced it are damaged); any further event
  of the same episode rolls back further, to a calm state at least
  ``window`` good steps older (the damage may predate the first spike:
  steps just under the threshold are accepted);
- after ``max_spikes`` spikes the loss level itself has moved (the restored
  weights keep giving such losses): the next such step is taken, the window
  restarts from it and the episode closes.

Events are counted per epoch in ``log.csv`` (``guard_spikes``,
``guard_nonfinite``) and over the run in the final summary, with the number
of episodes (learning-rate cuts). ``max_nonfinite`` non-finite steps in a
row stop training with :class:`TrainingDiverged`.

The guard keeps three copies of the training state (the last good step, the
calm state and the candidate that becomes the next calm state). Its own
state (window, counts, LR factor) is plain numbers saved in ``last.pt``;
the copies are not: until a resumed run's first good step, an event skips
its batch without a rollback (as in a run's very first step).
"""
from __future__ import annotations

import math
import statistics
from collections import deque

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

GOOD, SPIKE, NONFINITE = "good", "spike", "nonfinite"


class TrainingDiverged(RuntimeError):
    """Training produced non-finite losses ``max_nonfinite`` times in a row."""


class Snapshot:
    """A copy of the model's, optimiser's and weight average's tensors, refreshed in place each good step."""

    def __init__(self):
        self.model: dict[str, torch.Tensor] | None = None
        self.optimizer: dict | None = None
        self.ema: dict[str, torch.Tensor] | None = None
        self.ema_updates = 0

    @torch.no_grad()
    def take(self, model, optimizer, ema) -> None:
        self.model = _copy_into(self.model, model.state_dict())
        self.optimizer = _copy_optimizer(self.optimizer, optimizer.state_dict())
        if ema is not None:
            self.ema = _copy_into(self.ema, ema.shadow)
            self.ema_updates = ema.updates

    def __bool__(self) -> bool:
        return self.model is not None

    def clear(self) -> None:
        self.model = self.optimizer = self.ema = None
        self.ema_updates = 0

    @torch.no_grad()
    def restore(self, model, optimizer, ema) -> None:
        """Put the recorded state back (the learning rates stay as they are now)."""
        if self.model is None:
            raise RuntimeError("no good state has been recorded yet")
        model.load_state_dict(self.model)
        lrs = [group["lr"] for group in optimizer.param_groups]
        # a fresh copy: load_state_dict keeps the given tensors, which the next take() overwrites
        optimizer.load_state_dict(_copy_optimizer(None, self.optimizer))
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        if ema is not None and self.ema is not None:
            for name, value in self.ema.items():
                ema.shadow[name].copy_(value)
            ema.updates = self.ema_updates


def _copy_into(target: dict | None, source: dict) -> dict:
    if target is None or target.keys() != source.keys():
        return {name: value.detach().clone() for name, value in source.items()}
    for name, value in source.items():
        if target[name].shape != value.shape:
            target[name] = value.detach().clone()
        else:
            target[name].copy_(value)
    return target


def _copy_optimizer(target: dict | None, source: dict) -> dict:
    """A deep copy of an optimiser state dict (tensors copied, plain values kept)."""
    state = {}
    for index, entry in source["state"].items():
        old = target["state"].get(index) if target is not None else None
        state[index] = {key: (_copy_tensor(old.get(key) if old else None, value) if torch.is_tensor(value) else value)
                        for key, value in entry.items()}
    groups = [{key: (list(value) if isinstance(value, (list, tuple)) else value) for key, value in group.items()}
              for group in source["param_groups"]]
    return {"state": state, "param_groups": groups}


def _copy_tensor(target: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    if target is None or target.shape != value.shape or target.dtype != value.dtype:
        return value.detach().clone()
    return target.copy_(value)


class LossGuard:
    """Judges each step (:meth:`judge`), keeps the running loss level, the episodes and the event counts,
    and the copies of the training state it rolls back to (:meth:`accept`, :meth:`roll_back`)."""

    def __init__(self, settings: dict):
        self.factor = float(settings["factor"])
        self.window = int(settings["window"])
        self.min_steps = int(settings["min_steps"])
        self.lr_factor = float(settings["lr_factor"])
        self.max_nonfinite = int(settings["max_nonfinite"])
        self.max_spikes = int(settings["max_spikes"])
        self.recent: deque[float] = deque(maxlen=self.window)
        self.lr_scale = 1.0
        self.total = {SPIKE: 0, NONFINITE: 0}
        self.epoch_counts = {SPIKE: 0, NONFINITE: 0}
        self.episodes = 0          # episodes so far, each one learning-rate cut
        self.episode_events = 0    # events of the open episode (0: none open)
        self.episode_spikes = 0    # spikes of the open episode
        self.good_in_a_row = 0
        self.nonfinite_in_a_row = 0
        self.latest = Snapshot()     # the state before the last good step
        self.calm = Snapshot()       # a state from before the open episode, >= window good steps old
        self.candidate = Snapshot()  # the next calm state, taken during a calm stretch
        self.since_candidate = 0

    @property
    def cut(self) -> bool:
        """Whether the last event opened an episode (and so lowered the learning rate)."""
        return self.episode_events == 1

    def level(self) -> float:
        """The running loss level: median of the recent accepted losses (inf until ``min_steps``)."""
        if len(self.recent) < max(1, self.min_steps):
            return math.inf
        return statistics.median(self.recent)

    def judge(self, loss: float, grad_norm: float) -> str:
        """GOOD, SPIKE or NONFINITE for a step of training loss ``loss`` and gradient norm ``grad_norm``."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.nonfinite_in_a_row += 1
            self._event(NONFINITE)
            return NONFINITE
        self.nonfinite_in_a_row = 0
        if loss > self.factor * self.level():
            if self.episode_spikes < self.max_spikes:
                self._event(SPIKE)
                return SPIKE
            # the level has moved: start the window again from this loss; older states no longer apply
            self.recent.clear()
            self._close_episode()
            self.calm.clear()
            self.candidate.clear()
        self.recent.append(float(loss))
        self.good_in_a_row += 1
        if self.episode_events and self.good_in_a_row >= self.window:
            self._close_episode()
        return GOOD

    def restart_level(self) -> None:
        """Forget the running loss level (the loss was redefined, e.g. reweighted); spikes are judged again
        after ``min_steps`` accepted losses. The saved states stay valid rollback targets."""
        self.recent.clear()

    def _event(self, kind: str) -> None:
        self.total[kind] += 1
        self.epoch_counts[kind] += 1
        self.good_in_a_row = 0
        self.episode_events += 1
        self.episode_spikes += kind == SPIKE
        if self.episode_events == 1:
            self.episodes += 1
            self.lr_scale *= self.lr_factor

    def _close_episode(self) -> None:
        self.episode_events = self.episode_spikes = 0

    def accept(self, model, optimizer, ema) -> None:
        """Record the state of a good step before it is taken; in a calm stretch, every ``window`` good
        steps the candidate becomes the calm state and a new candidate is taken."""
        self.latest.take(model, optimizer, ema)
        if self.episode_events:
            return
        self.since_candidate += 1
        if not self.candidate or self.since_candidate >= self.window:
            if self.candidate:
                self.calm, self.candidate = self.candidate, self.calm
            self.candidate.take(model, optimizer, ema)
            self.since_candidate = 0

    def roll_back(self, model, optimizer, ema) -> str:
        """Restore the state this event calls for; says which."""
        if self.episode_events > 1 and self.calm:
            self.calm.restore(model, optimizer, ema)
            self.candidate.clear()  # taken after the calm state, on the path just abandoned
            self.since_candidate = 0
            return f"rolled back to the calm state (>= {self.window} good steps before this episode)"
        if self.latest:
            self.latest.restore(model, optimizer, ema)
            return "rolled back to the last good step"
        return "skipped (no good step recorded yet)"

    def stopped(self) -> bool:
        """Whether the non-finite steps in a row reached ``max_nonfinite``."""
        return self.nonfinite_in_a_row >= self.max_nonfinite

    def epoch_row(self) -> dict:
        """This epoch's event counts for the log row; resets them."""
        row = {"guard_spikes": self.epoch_counts[SPIKE], "guard_nonfinite": self.epoch_counts[NONFINITE]}
        self.epoch_counts = {SPIKE: 0, NONFINITE: 0}
        return row

    def summary(self) -> str:
        return (f"divergence guard: {self.total[SPIKE]} loss spike(s) and {self.total[NONFINITE]} non-finite "
                f"step(s) rolled back in {self.episodes} episode(s); learning rate x {self.lr_scale:.3g}")

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "lr_scale": self.lr_scale, "total": dict(self.total),
                "epoch_counts": dict(self.epoch_counts), "nonfinite_in_a_row": self.nonfinite_in_a_row,
                "episodes": self.episodes, "episode_events": self.episode_events,
                "episode_spikes": self.episode_spikes, "good_in_a_row": self.good_in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.recent = deque((float(v) for v in state["recent"]), maxlen=self.window)
        self.lr_scale = float(state["lr_scale"])
        self.total = {k: int(v) for k, v in state["total"].items()}
        self.epoch_counts = {k: int(v) for k, v in state["epoch_counts"].items()}
        self.nonfinite_in_a_row = int(state["nonfinite_in_a_row"])
        # checkpoints written before episodes were counted: every event was a cut
        self.episodes = int(state.get("episodes", sum(self.total.values())))
        self.episode_events = int(state.get("episode_events", 0))
        self.episode_spikes = int(state.get("episode_spikes", 0))
        self.good_in_a_row = int(state.get("good_in_a_row", 0))


def frame_origin(dataset: Dataset, position: int) -> tuple[int, int]:
    """(part, index) of position ``position`` of a dataset built of Subsets and ConcatDatasets:
    ``part`` numbers the underlying file (the order of ``data.train``), ``index`` the frame in it."""
    while isinstance(dataset, Subset):
        dataset, position = dataset.dataset, int(dataset.indices[position])
    if isinstance(dataset, ConcatDataset):
        import bisect

        part = bisect.bisect_right(dataset.cumulative_sizes, position)
        start = dataset.cumulative_sizes[part - 1] if part else 0
        inner, index = frame_origin(dataset.datasets[part], position - start)
        return sum(_files(d) for d in dataset.datasets[:part]) + inner, index
    return 0, int(position)


def _files(dataset: Dataset) -> int:
    """How many files (leaf datasets) a dataset is built of."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if isinstance(dataset, ConcatDataset):
        return sum(_files(d) for d in dataset.datasets)
    return 1
