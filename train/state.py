"""Run files: ``best.pt`` (the best weights) and ``last.pt`` (everything needed to resume), both atomic.

Both are molsym checkpoints (``molsym.load`` and ``MolSymCalculator.from_checkpoint``
read them; the weights are the moving average when EMA is on). ``last.pt``
also holds, under ``"training"``: the raw weights, optimiser, LR schedule,
EMA, the random states of torch, numpy and Python, the position in the run
(epoch, step in the epoch, optimiser steps, seconds spent), the partial
epoch's metric sums, the best validation loss, the per-epoch history and the
training config. Everything is tensors and plain containers, so it loads
with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from molsym.checkpoint import CheckpointError, atomic_save, check_weights, model_payload, read_payload

BEST = "best.pt"
LAST = "last.pt"
# Keys of the training config that may change when a run is resumed.
RESUMABLE_CHANGES = {"epochs", "max_time", "progress", "tensorboard", "eval_every", "save_every"}
RESUMABLE_DATA_CHANGES = {"num_workers", "valid_batch_size"}


def random_states() -> dict:
    """The random states of torch (CPU and CUDA), numpy and Python, as plain data."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "python": _nested_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(_nested_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _nested_lists(value):
    return [_nested_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _nested_tuples(value):
    return tuple(_nested_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_best(model, weights: dict, path: Path, metadata: dict) -> None:
    """Write ``best.pt``: a plain model checkpoint with ``weights`` (averaged or raw)."""
    atomic_save(model_payload(model, metadata, weights), path)


def save_last(model, weights: dict, path: Path, metadata: dict, training: dict) -> None:
    """Write ``last.pt``: a model checkpoint plus the ``training`` state."""
    payload = model_payload(model, metadata, weights)
    payload["training"] = training
    atomic_save(payload, path)


def read_training_state(path: Path) -> dict:
    """The payload of ``last.pt`` (with its ``training`` entry), checked to be resumable."""
    payload = read_payload(path)
    if "training" not in payload or "config" not in payload:
        raise CheckpointError(f"{str(path)!r} holds no training state: it cannot be resumed (it is a model-only checkpoint)")
    if isinstance(payload.get("state_dict"), dict):
        check_weights(payload, str(path))
    return payload


def config_changes(previous: dict, current: dict) -> list[str]:
    """Dotted keys whose values differ between two validated training configs, apart from the resumable ones
    and keys the previous config lacks (added to the schema after its run was written)."""
    changes = []
    for key in sorted(set(previous) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        old, new = previous.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            allowed = RESUMABLE_DATA_CHANGES if key == "data" else set()
            changes += [f"{key}.{k}" for k in sorted(set(old) | set(new))
                        if k not in allowed and k in old and old.get(k) != new.get(k)]
        elif key not in previous:
            continue  # a key added to the schema after the run was written: its default applies
        elif old != new:
            changes.append(key)
    return changes
