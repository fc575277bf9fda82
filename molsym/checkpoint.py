"""Checkpoints: config + state dict + metadata, written atomically, read without unpickling code.

A checkpoint is one ``torch.save`` file holding only plain data::

    {"format": 1, "molsym_version": str, "config": dict, "state_dict": {name: Tensor}, "metadata": dict}

It is read with ``torch.load(weights_only=True)``, whose unpickler accepts
tensors and plain containers only: a file that holds any other object (for
instance one whose ``__reduce__`` would run code) is refused before anything
in it is executed.
"""
from __future__ import annotations

import os
import pickle
import secrets

import torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, unsafe or not a molsym model."""


def save(model, path, metadata: dict | None = None) -> None:
    """Write ``model`` (its config and state dict) and ``metadata`` to ``path`` atomically.

    The file is written to a temporary file in the same directory, flushed to
    disk and renamed over ``path``, so readers never see a half-written
    checkpoint and an interrupted save leaves any previous file intact.
    ``metadata`` must hold plain data (str, int, float, bool, None, lists,
    dicts, tensors); anything else raises ``TypeError`` before the file is touched.
    """
    atomic_save(model_payload(model, metadata), path)


def model_payload(model, metadata: dict | None = None, state_dict: dict | None = None) -> dict:
    """The checkpoint dict of ``model`` (``state_dict`` replaces the model's own weights, e.g. averaged ones)."""
    from molsym import __version__

    weights = model.state_dict() if state_dict is None else state_dict
    return {
        "format": FORMAT_VERSION,
        "molsym_version": __version__,
        "config": _plain(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in weights.items()},
        "metadata": _plain(metadata or {}),
    }


def atomic_save(payload, path) -> None:
    """``torch.save(payload)`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never follow or reuse an existing file; mode 0666 filtered by the umask, as for open()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(path, map_location="cpu"):
    """Read a checkpoint written by :func:`save` and return the model in eval mode.

    The model gets the dtype of the stored weights and is moved to
    ``map_location`` (a device name or ``torch.device``); its ``metadata``
    attribute holds the stored metadata dict.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, holds
            objects other than tensors and plain containers (refused, never
            executed), is not a molsym checkpoint, or its state dict does not
            match its config.
    """
    path = os.fspath(path)
    payload = read_payload(path)
    config, state_dict = _validate_payload(payload, path)
    model = _build(config, path)
    dtypes = [v.dtype for v in state_dict.values() if v.is_floating_point()]
    if dtypes:  # cast before loading, so that float64 weights are not rounded through float32
        model.to(max(set(dtypes), key=dtypes.count))
    problems = _state_dict_mismatch(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"checkpoint {path!r}: its state dict does not match its config ({problems})")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path!r}: its state dict does not match its config: {err}") from None
    if map_location is not None:
        model.to(torch.device(map_location))
    model.metadata = payload.get("metadata", {})
    return model.eval()


def read_payload(path) -> dict:
    """The raw dict of a checkpoint file, read with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing, corrupt or truncated file, or one holding
            anything but tensors and plain containers (refused, never executed).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path!r} is unsafe or corrupt: it holds data that is not plain tensors and containers "
            f"and was refused without being unpickled ({_unpickling_reason(err)})"
        ) from None
    except Exception as err:  # zip / stream / EOF errors of truncated or foreign files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        reason = f"{type(err).__name__}: {first_line}"
        raise CheckpointError(f"checkpoint {path!r} is corrupt, truncated or not a torch file ({reason})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path!r} is not a molsym checkpoint (expected a dict, got {type(payload).__name__})")
    return payload


def _validate_payload(payload, path: str) -> tuple[dict, dict]:
    if not isinstance(payload, dict) or not {"config", "state_dict"} <= set(payload):
        raise CheckpointError(f"{path!r} is not a molsym checkpoint (expected a dict with keys 'config' and 'state_dict')")
    version = payload.get("format", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path!r} has an invalid checkpoint format field {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint format {version}, newer than this molsym supports ({FORMAT_VERSION}); upgrade molsym"
        )
    config, state_dict = payload["config"], payload["state_dict"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{path!r}: 'config' must be a dict, got {type(config).__name__}")
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointError(f"{path!r}: 'state_dict' must map parameter names to tensors")
    if not isinstance(payload.get("metadata", {}), dict):
        raise CheckpointError(f"{path!r}: 'metadata' must be a dict")
    return config, state_dict


def _state_dict_mismatch(expected: dict, stored: dict, shown: int = 3) -> str:
    """One line naming missing and unexpected keys and shape mismatches ('' when they match)."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k}: stored {tuple(stored[k].shape)}, config gives {tuple(v.shape)}"
        for k, v in expected.items() if k in stored and stored[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" and {len(items) - shown} more" if len(items) > shown else ""
            parts.append(f"{len(items)} {label}: {'; '.join(items[:shown])}{more}")
    return "; ".join(parts)


def _build(config: dict, path: str):
    from molsym.models.potential import Potential

    try:
        return Potential.from_config(config)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path!r} holds an invalid model config: {err}") from None


def _unpickling_reason(err: Exception) -> str:
    """The informative part of torch's weights-only refusal: which global or opcode was blocked."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            line = line.split("error: ", 1)[-1]
            return line.split(". ", 1)[0].rstrip(".")  # drop torch's advice on allowlisting it
    return lines[-1] if lines else type(err).__name__


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (best effort; not possible on every platform)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _plain(value):
    """Recursively convert to plain Python containers of str/int/float/bool/None (and CPU tensors)."""
    if isinstance(value, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    raise TypeError(f"checkpoint metadata must hold plain data, got {type(value).__name__}")
