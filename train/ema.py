"""Exponential moving average of a model's weights, evaluated and saved in place of the raw weights."""
from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """w_ema <- d * w_ema + (1 - d) * w after every optimiser step, with the warm-up
    d_t = min(d, (1 + t) / (10 + t)) so early averages are not dominated by the random start.

    Floating buffers (E0, scale, shift) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        parameters = dict(model.named_parameters())
        for name, value in model.state_dict().items():
            if name in parameters and value.is_floating_point():
                self.shadow[name].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates,
                "shadow": {name: value.detach().cpu().clone() for name, value in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
