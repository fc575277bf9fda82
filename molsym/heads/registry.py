"""The explicit table of heads a model config can name under ``heads``, and their validation.

``{"heads": {"hessian": {"cutoff": 4.0, "sum_rule": True}}}``: each entry is plain data, the
keys of the head's frozen settings dataclass (``Head.Settings``). :func:`normalise_heads`
fills the defaults in (so checkpoints hold every value) and names the head and the key in
every error; :func:`build_heads` makes the modules.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, fields

from torch import nn

from molsym.heads.hessian import HessianHead

HEADS: dict[str, type[nn.Module]] = {"hessian": HessianHead}


def _closest(key: str, known) -> str:
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def normalise_heads(heads, model_cutoff: float) -> dict[str, dict]:
    """Validate the ``heads`` entry of a model config; returns {name: settings as plain dict}.

    ``None`` means no heads. Raises TypeError / ValueError naming ``heads.<name>`` and the key.
    """
    if heads is None:
        return {}
    if not isinstance(heads, dict):
        raise TypeError(f"model config: 'heads' must map head names to settings, e.g. "
                        f"{{'hessian': {{'cutoff': 4.0}}}}, got {heads!r}")
    out = {}
    for name, entry in heads.items():
        if not isinstance(name, str) or name not in HEADS:
            raise ValueError(f"model config: heads: unknown head {name!r}{_closest(str(name), HEADS)}; "
                             f"available: {sorted(HEADS)}")
        entry = {} if entry is None else entry
        if not isinstance(entry, dict):
            raise TypeError(f"model config: heads.{name} must be a mapping of settings, got {entry!r}")
        settings_class = HEADS[name].Settings
        keys = [f.name for f in fields(settings_class)]
        unknown = [k for k in entry if k not in keys]
        if unknown:
            raise ValueError(f"model config: heads.{name}: unknown key {unknown[0]!r}{_closest(str(unknown[0]), keys)}; "
                             f"a {name} head takes {keys}")
        try:
            settings = settings_class(**entry).resolved(model_cutoff)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model config: heads.{name}: {error}") from None
        out[name] = asdict(settings)
    return out


def build_heads(heads: dict[str, dict], feature_channels: int) -> nn.ModuleDict:
    """The head modules of a normalised ``heads`` entry, reading features of ``feature_channels``."""
    return nn.ModuleDict({name: HEADS[name](HEADS[name].Settings(**settings), feature_channels)
                          for name, settings in heads.items()})
