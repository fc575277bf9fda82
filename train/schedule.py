"""Learning-rate schedules: linear warm-up, then constant, cosine decay, or reduce-on-plateau.

The LR of step s (optimiser steps since the start) is

    lr(s) = lr0 * warm(s) * decay(s),
    warm(s) = start + (1 - start) * min(1, s / warmup_steps)

with ``decay`` 1 (constant), the cosine from 1 to ``min_lr / lr0`` over the
steps after warm-up (cosine), or the product of every plateau reduction so
far (plateau: after ``patience`` evaluations without a relative improvement
of ``threshold`` in the validation loss, multiply by ``factor``, never below
``min_lr``). The whole state is plain numbers, saved with the run.

Fitting the cosine to a time budget (``fit_to_budget`` with ``max_time``):
the cosine's length is ``epochs`` x steps per epoch unless the budget ends
the run first. After every epoch the loop calls :meth:`fit_to_budget` with
the steps taken and the training seconds spent; at the speed measured so far
(steps / seconds) the budget allows s_fit = s + (max_time - t) x s / t
steps, and the cosine's length becomes min(its length, s_fit). The first
epoch's speed sets the length; later epochs only ever shorten it (a slower
machine), never lengthen it, so the LR never rises again and every run that
its budget stops has annealed to ``min_lr`` by then. The fitted length is
saved with the run; resuming with another ``max_time`` fits afresh.

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
        self.fitted_steps: int | None = None  # cosine length the time budget allows, once measured
        self.fit_budget: float | None = None  # the max_time it was fitted to (s)
        self.guard_scale = 1.0
        self.step_count = 0
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_evaluations = 0
        self.apply()

    @property
    def total_steps(self) -> int:
        """Steps of the whole schedule: ``epochs`` x steps per epoch, or fewer when fitted to a budget."""
        if self.fitted_steps is None:
            return self.planned_steps
        return max(1, min(self.planned_steps, self.fitted_steps))

    def fit_to_budget(self, steps: int, seconds: float, budget: float | None) -> None:
        """Shorten the cosine so it ends within ``budget`` s, at ``steps`` per ``seconds`` measured so far."""
        if not self.fit or budget is None or steps <= 0 or seconds <= 0:
            return
        if self.fit_budget != budget:
            self.fitted_steps, self.fit_budget = None, float(budget)
        allowed = steps + int(max(0.0, budget - seconds) * steps / seconds)
        allowed = max(allowed, self.warmup_steps + 1, steps)
        self.fitted_steps = allowed if self.fitted_steps is None else min(self.fitted_steps, allowed)
        self.apply()

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
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0, s - self.warmup_steps) / span)
            floor = min(self.min_lr / self.lr0, 1.0)
            decay = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
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

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "plateau_scale": self.plateau_scale, "best": self.best,
                "bad_evaluations": self.bad_evaluations, "total_steps": self.total_steps,
                "fitted_steps": self.fitted_steps, "fit_budget": self.fit_budget, "guard_scale": self.guard_scale}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad_evaluations = int(state["bad_evaluations"])
        fitted = state.get("fitted_steps")  # absent in runs saved before budget fitting
        self.fitted_steps = None if fitted is None else int(fitted)
        self.fit_budget = None if state.get("fit_budget") is None else float(state["fit_budget"])
        self.guard_scale = float(state.get("guard_scale", 1.0))
        self.apply()
