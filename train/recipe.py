"""The default training recipe: what ``molsym train`` does with a config that names only its data.

Measured basis (3BPA, 450 training structures, 2-core CPU; the README's
Training section and examples/3bpa/README.md): TensorNet with 32 channels, 2 layers, cutoff 4.5 Å, 8 radial
functions, MACE's 3BPA loss weights (27 energy-per-atom, 1000 force
components), AdamW/AMSGrad at lr 0.01 with weight decay 5e-7, batch 10, a
cosine schedule after one epoch of warm-up down to 1e-5, EMA 0.99, gradient
clipping at 10 and the divergence guard trained smoothly and beat wider
models within the same CPU time (wider models overfit a few hundred
structures). What scales:

- **Learning rate with width**: ``optimizer.lr: auto`` is
  0.01 x min(1, sqrt(32 / channels)) (0.01 at <= 32 channels, 0.0071 at 64,
  0.005 at 128): Adam's update size per weight does not shrink with fan-in,
  so the first layers' outputs move ~sqrt(width) faster in wider models.
- **Batch with the data**: ``data.batch_size: auto`` is
  clip(n_train // 45, 4, 32) structures: 45 steps per epoch (the measured
  10 at 450 structures) for small sets, at most 32 for large ones.
- **Epochs with the data**: ``epochs: auto`` makes the cosine about 6000
  optimiser steps (the measured 3BPA run: 126 epochs x 45 steps), between 10
  and 1000 epochs; with ``max_time`` the cosine is fitted to the budget
  (``schedule.fit_to_budget``), so it anneals either way.
"""
from __future__ import annotations

import math

AUTO = "auto"

# model keys the recipe fills where the config leaves them out (the builder's defaults are for inference-size
# models; these are the trained-and-measured ones)
MODEL = {"family": "tensornet", "channels": 32, "layers": 2, "cutoff": 4.5, "num_radial": 8, "radial_hidden": 64}

REFERENCE_LR = 0.01  # at REFERENCE_CHANNELS
REFERENCE_CHANNELS = 32
STEPS_PER_EPOCH = 45
MAX_BATCH = 32
MIN_BATCH = 4
TOTAL_STEPS = 6000
EPOCH_RANGE = (10, 1000)


def model_config(model: dict) -> dict:
    """``model`` with the recipe's keys filled in where absent (``layers`` only for a single family name:
    a list of per-layer entries sets the layer count itself)."""
    out = dict(model)
    out.setdefault("family", MODEL["family"])
    if isinstance(out["family"], str):
        out.setdefault("layers", MODEL["layers"])
    for key in ("channels", "cutoff", "num_radial", "radial_hidden"):
        out.setdefault(key, MODEL[key])
    return out


def widest(model: dict) -> int:
    """The largest channel count of a model config: its global ``channels`` or any layer's own."""
    widths = [model.get("channels", MODEL["channels"])]
    if isinstance(model.get("family"), (list, tuple)):
        widths += [entry["channels"] for entry in model["family"] if isinstance(entry, dict) and "channels" in entry]
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"channels must be positive integers, got {widths}")
    return max(widths)


def learning_rate(model: dict) -> float:
    """AdamW learning rate for a model config: 0.01 x min(1, sqrt(32 / its widest channel count))."""
    return REFERENCE_LR * min(1.0, math.sqrt(REFERENCE_CHANNELS / widest(model)))


def batch_size(num_train: int) -> int:
    """Structures per optimiser step for ``num_train`` training structures."""
    return int(min(MAX_BATCH, max(MIN_BATCH, num_train // STEPS_PER_EPOCH)))


def epochs(num_train: int, batch: int) -> int:
    """Epochs that make about ``TOTAL_STEPS`` optimiser steps."""
    steps = max(1, math.ceil(num_train / batch))
    low, high = EPOCH_RANGE
    return int(min(high, max(low, math.ceil(TOTAL_STEPS / steps))))


def resolve_data_dependent(config: dict, num_train: int, world_size: int = 1) -> dict:
    """A copy of a validated config with ``data.batch_size`` (at least one structure per process) and
    ``epochs`` chosen for ``num_train`` training structures where they are auto."""
    out = {**config, "data": dict(config["data"])}
    if out["data"]["batch_size"] == AUTO:
        out["data"]["batch_size"] = max(batch_size(num_train), int(world_size))
    if out["epochs"] == AUTO:
        out["epochs"] = epochs(num_train, out["data"]["batch_size"])
    return out
