"""Checkpoints: config + state dict + metadata, written atomically, read without unpickling code.

A checkpoint is one ``torch.save`` file holding only plain data::

    {"format": 1, "molsym_version": str, "config": dict, "state_dict": {name: Tensor}, "metadata": dict,
     "checksum": {"algorithm": "sha256", "state_dict": hex digest}}

It is read with ``torch.load(weights_only=True)``, whose unpickler accepts
tensors and plain containers only: a file that holds any other object (for
instance one whose ``__reduce__`` would run code) is refused before anything
in it is executed.

Integrity: the checksum is a sha256 over every tensor of the state dict
(names in sorted order, dtype, shape and bytes; :func:`state_dict_checksum`).
:func:`load` recomputes it and refuses a file whose weights changed after
writing (flipped bytes that still unzip); checkpoints written before
checksums existed carry none and are accepted. Non-finite weights are refused
with the parameter's name, with or without a checksum.

Interrupted writes: :func:`atomic_save` writes ``.NAME.<16 hex>.tmp`` beside
``NAME`` and renames it over; a process killed in between leaves that file.
The next write to ``NAME`` removes such files once they are older than
``STALE_TEMPORARY_SECONDS`` (10 minutes) since their last modification:
a live writer (another process saving the same path at the same moment)
keeps writing to its file, so only files nobody has touched for that long,
far longer than any checkpoint write, are removed. Only names of exactly
that pattern are touched.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import secrets
import time

import torch

FORMAT_VERSION = 1
CHECKSUM_ALGORITHM = "sha256"
# Temporary files of an interrupted write older than this (seconds since modification) are removed.
STALE_TEMPORARY_SECONDS = 600.0


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
    weights = {k: v.detach().cpu().clone() for k, v in weights.items()}
    return {
        "format": FORMAT_VERSION,
        "molsym_version": __version__,
        "config": _plain(model.config),
        "state_dict": weights,
        "metadata": _plain(metadata or {}),
        "checksum": {"algorithm": CHECKSUM_ALGORITHM, "state_dict": state_dict_checksum(weights)},
    }


def state_dict_checksum(state_dict: dict) -> str:
    """sha256 hex digest over the tensors of ``state_dict``: for each name in sorted order,
    the name, dtype, shape and the raw bytes of its (CPU, contiguous) data."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def atomic_save(payload, path) -> None:
    """``torch.save(payload)`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(path)
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


def remove_stale_temporaries(path, older_than: float = STALE_TEMPORARY_SECONDS) -> list[str]:
    """Remove ``.NAME.<16 hex>.tmp`` files of interrupted writes to ``path`` untouched for ``older_than`` s.

    Returns the removed paths. Files of another name, or modified more recently
    (possibly a concurrent writer's), are left alone.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(rf"\.{re.escape(os.path.basename(path))}\.[0-9a-f]{{16}}\.tmp")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not pattern.fullmatch(name):
            continue
        candidate = os.path.join(directory, name)
        try:
            if not os.path.isfile(candidate) or now - os.stat(candidate).st_mtime < older_than:
                continue
            os.unlink(candidate)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        removed.append(candidate)
    return removed


def load(path, map_location="cpu"):
    """Read a checkpoint written by :func:`save` and return the model in eval mode.

    The model gets the dtype of the stored weights and is moved to
    ``map_location`` (a device name or ``torch.device``); its ``metadata``
    attribute holds the stored metadata dict.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, holds
            objects other than tensors and plain containers (refused, never
            executed), is not a molsym checkpoint, its weights do not match
            their checksum or are not finite, or its state dict does not
            match its config.
    """
    path = os.fspath(path)
    payload = read_payload(path)
    config, state_dict = _validate_payload(payload, path)
    check_weights(payload, path)
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


def check_weights(payload: dict, path: str) -> None:
    """Refuse a payload whose state dict does not match its stored checksum (when it has one)
    or holds NaN/inf, naming the parameters; see the module docstring."""
    state_dict = payload["state_dict"]
    checksum = payload.get("checksum")
    if checksum is not None:
        if not isinstance(checksum, dict) or checksum.get("algorithm") != CHECKSUM_ALGORITHM \
                or not isinstance(checksum.get("state_dict"), str):
            raise CheckpointError(f"checkpoint {path!r} has a malformed checksum entry {checksum!r}")
        if state_dict_checksum(state_dict) != checksum["state_dict"]:
            raise CheckpointError(
                f"checkpoint {path!r} is corrupt: its weights do not match the {CHECKSUM_ALGORITHM} checksum "
                f"written with them (the file was changed or damaged after it was saved)")
    bad = [name for name, tensor in state_dict.items()
           if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"checkpoint {path!r} holds non-finite weights (NaN or inf) in {shown}")


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
