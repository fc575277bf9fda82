"""Learning-rate schedules: linear warm-up, then constant, cosine decay, or reduce-on-plateau.

The LR of step s (optimiser steps since the start) is

    lr(s) = lr0 * warm(s) * decay(s),
    warm(s) = start + (1 - start) * min(1, s / warmup_steps)

with ``decay`` 1 (constant), the cosine from 1 to ``min_lr / lr0`` over the
steps after warm-up (cosine), or the product of every plateau reduction so
far (plateau: after ``patience`` evaluations without a relative improvement
of ``threshold`` in the validation loss, multiply by ``factor``, never below
``min_lr``). The whole state is plain numbers, saved with the run.

The cosine is tracked by its progress p (0 after warm-up, 1 at its end,
where the LR is ``min_lr``), advanced by a rate per step: 1 / (steps after
warm-up) for ``epochs`` x steps per epoch. Resuming with another ``epochs``
re-plans the rate from the current p, so the LR continues without a jump.

Fitting the cosine to a time budget (``fit_to_budget`` with ``max_time``):
after every epoch the loop calls :meth:`LearningRate.fit_to_budget` with the
optimiser steps taken (s) and the training seconds spent (t). At the speed
measured so far, s / t, the budget leaves R = (max_time - t) x s / t steps;
the rate becomes (1 - p) / min(R, steps left in ``epochs``). So the first
epoch's speed stretches (or shrinks) the cosine over the budget, each later
epoch corrects the estimate both ways (a machine that slows down or speeds
up), the LR never rises (p only grows), and a run that its budget stops has
annealed to ``min_lr`` by then. p and the rate are saved with the run.

The divergence guard (``molsym.train.guard``) lowers the LR by a factor
that multiplies every schedule (:attr:`LearningRate.guard_scale`), never
below ``min_lr``.
"""
from __future__ import annotations

import math


class LearningRate:
    """Sets the optimiser's LR every step; ``report(valid_loss)`` after each validation (plateau)."""

    def __init__(self, optimizer, schedule: dict, lr: float, steps_per_epoch: int, epochs: int):
        self.optimizer = optimizer
        self.kind = schedule["type"]
        self.lr0 = float(lr)
        self.min_lr = float(schedule["min_lr"])
        self.factor = float(schedule["factor"])
        self.patience = int(schedule["patience"])
        self.threshold = float(schedule["threshold"])
        self.warmup_start = float(schedule["warmup_start"])
        self.warmup_steps = int(round(float(schedule["warmup_epochs"]) * steps_per_epoch))
        self.fit = bool(schedule["fit_to_budget"]) and self.kind == "cosine"
        self.planned_steps = max(1, steps_per_epoch * epochs)
        self.fit_budget: float | None = None  # the max_time (s) the cosine was last fitted to
        self.guard_scale = 1.0
        self.step_count = 0
        self.progress = 0.0  # of the cosine, in [0, 1]
        self.rate = 0.0
        self._plan(self.planned_steps)
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_evaluations = 0
        self.apply()

    def _plan(self, remaining_steps: float) -> None:
        """Set the rate so the cosine ends after ``remaining_steps`` more steps (warm-up included)."""
        after_warmup = remaining_steps - max(0, self.warmup_steps - self.step_count)
        self.rate = (1.0 - self.progress) / max(1.0, after_warmup)

    @property
    def total_steps(self) -> int:
        """Steps from the start to the cosine's end, as planned now (``epochs`` x steps per epoch, or fitted)."""
        remaining = math.ceil((1.0 - self.progress) / self.rate - 1e-9) if self.rate > 0 else 0
        return self.step_count + max(0, self.warmup_steps - self.step_count) + remaining

    def fit_to_budget(self, steps: int, seconds: float, budget: float | None) -> None:
        """Re-plan the cosine to end when ``budget`` s are spent, at ``steps`` per ``seconds`` measured so far."""
        if not self.fit or budget is None or steps <= 0 or seconds <= 0:
            return
        by_budget = max(0.0, budget - seconds) * steps / seconds
        self._plan(min(by_budget, self.planned_steps - self.step_count))
        self.fit_budget = float(budget)

    def value(self) -> float:
        base = self.base_value()
        if self.guard_scale >= 1.0:
            return base
        return max(base * self.guard_scale, min(base, self.min_lr))

    def base_value(self) -> float:
        """The schedule's LR before the guard's reduction."""
        s = self.step_count
        warm = 1.0
        if self.warmup_steps > 0 and s < self.warmup_steps:
            warm = self.warmup_start + (1.0 - self.warmup_start) * s / self.warmup_steps
        if self.kind == "cosine":
            floor = min(self.min_lr / self.lr0, 1.0)
            decay = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * self.progress))
        elif self.kind == "plateau":
            decay = self.plateau_scale
        else:
            decay = 1.0
        return self.lr0 * warm * decay

    def apply(self) -> None:
        lr = self.value()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        """After each optimiser step."""
        self.step_count += 1
        if self.step_count > self.warmup_steps:
            self.progress = min(1.0, self.progress + self.rate)
        self.apply()

    def report(self, valid_loss: float) -> None:
        """After each validation: plateau bookkeeping (other schedules ignore it)."""
        if self.kind != "plateau" or not math.isfinite(valid_loss):
            return
        if valid_loss < self.best * (1.0 - self.threshold):
            self.best = valid_loss
            self.bad_evaluations = 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations > self.patience:
            self.plateau_scale = max(self.plateau_scale * self.factor, min(self.min_lr / self.lr0, 1.0))
            self.bad_evaluations = 0
            self.apply()

    def restart_plateau(self) -> None:
        """Forget the best validation loss (the loss was redefined): plateaus are judged on the new loss only;
        the reductions made so far stay."""
        self.best = math.inf
        self.bad_evaluations = 0

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "plateau_scale": self.plateau_scale, "best": self.best,
                "bad_evaluations": self.bad_evaluations, "total_steps": self.total_steps,
                "planned_steps": self.planned_steps, "progress": self.progress, "rate": self.rate,
                "fit_budget": self.fit_budget, "guard_scale": self.guard_scale}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad_evaluations = int(state["bad_evaluations"])
        self.guard_scale = float(state.get("guard_scale", 1.0))
        self.fit_budget = None if state.get("fit_budget") is None else float(state["fit_budget"])
        if "progress" in state:
            self.progress, self.rate = float(state["progress"]), float(state["rate"])
            if int(state["planned_steps"]) != self.planned_steps:  # resumed with another number of epochs
                self._plan(self.planned_steps - self.step_count)
        else:  # saved before progress was tracked: the cosine over the current epochs
            span = max(1, self.planned_steps - self.warmup_steps)
            self.progress = min(1.0, max(0, self.step_count - self.warmup_steps) / span)
            self.rate = 1.0 / span
        self.apply()
