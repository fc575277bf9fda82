"""Two-stage training: the loss is reweighted for the last part of the run, as MACE's second stage does.

Force-weighted training (stage one) fits forces well and energies less so;
MACE's recipe ends with a stage whose loss weighs the energy up (its
``swa_energy_weight`` 1000, ``swa_forces_weight`` 100) to recover energy
accuracy at little cost in forces. With ``stage_two`` set, a run switches at
the first epoch boundary where it is ``start`` of the way through, measured
as the larger of

    optimiser steps taken / steps planned (the cosine's fitted end, or epochs)
    training seconds spent / max_time          (when a budget is set)

so a run stopped by its time budget still spends its last ``1 - start`` in
stage two. The switch changes only the loss weights: the LR keeps following
its schedule (a cosine is at 15 % of its peak 0.75 of the way along, and
anneals on to ``min_lr``), the weight average (EMA) goes
on, and the divergence guard restarts its running level and a plateau
schedule its best loss (the loss's scale changes). The best checkpoint is chosen afresh in stage two, by stage two's
validation loss, so ``best.pt`` is a stage-two model; ``log.csv`` has a
``stage`` column. The stage is saved in ``last.pt`` and resumes with it.
"""
from __future__ import annotations

REWEIGHTED = ("energy", "forces", "stress")


class TwoStages:
    """Which stage a run is in, and the loss weights of that stage."""

    def __init__(self, loss: dict, stage_two: dict | None):
        self.loss = dict(loss)
        self.settings = stage_two
        self.stage = 1
        self.second = dict(loss)
        if stage_two is not None:
            self.second.update({name: float(stage_two[name]) for name in REWEIGHTED if stage_two[name] is not None})

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    @property
    def weights(self) -> dict:
        """The loss weights of the current stage (the ``loss`` section's keys)."""
        return self.second if self.stage == 2 else self.loss

    def needs(self, term: str) -> bool:
        """Whether either stage weighs ``term`` (energy, forces, stress) above 0."""
        return self.loss[term] > 0 or self.second[term] > 0

    def due(self, steps: int, planned_steps: int, seconds: float, budget: float | None) -> bool:
        """Whether stage one is over: ``start`` of the run is done, by steps or by the time budget."""
        if self.settings is None or self.stage == 2:
            return False
        done = steps / max(1, planned_steps)
        if budget is not None and budget > 0:
            done = max(done, seconds / budget)
        return done >= float(self.settings["start"])

    def state_dict(self) -> dict:
        return {"stage": self.stage}

    def load_state_dict(self, state: dict | None) -> None:
        self.stage = 1 if state is None else int(state["stage"])
