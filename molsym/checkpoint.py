"""Checkpoints: config + state dict + metadata, written atomically, read without unpickling code."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile

import torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, unsafe or not a molsym model."""


def save(model, path, metadata: dict | None = None) -> None:
    """Write ``{"format", "config", "state_dict", "metadata"}`` to ``path`` atomically (temp file + rename)."""
    from molsym import __version__

    payload = {
        "format": FORMAT_VERSION,
        "molsym_version": __version__,
        "config": _plain(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": _plain(metadata or {}),
    }
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
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


def load(path, map_location="cpu"):
    """Read a checkpoint written by :func:`save` and return the model (eval mode).

    Uses ``torch.load(weights_only=True)``: a file holding pickled objects other
    than tensors and plain containers is refused, never executed.
    """
    from molsym.models.potential import Potential

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path!r} holds objects that are not plain tensors and containers; "
            f"refusing to unpickle it ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a torch file: {err}") from None
    if not isinstance(payload, dict) or not {"config", "state_dict"} <= set(payload):
        raise CheckpointError(f"{path!r} is not a molsym checkpoint (expected keys 'config' and 'state_dict')")
    if payload.get("format", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has checkpoint format {payload['format']}, newer than this molsym supports")
    model = Potential.from_config(payload["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path!r} does not match its own config: {err}") from None
    dtype = next(iter(payload["state_dict"].values())).dtype if payload["state_dict"] else torch.float32
    model.to(dtype)
    model.metadata = payload.get("metadata", {})
    return model.eval()


def _plain(value):
    """Recursively convert to plain Python containers of str/int/float/bool/None."""
    if isinstance(value, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    raise TypeError(f"checkpoint metadata must hold plain data, got {type(value).__name__}")
