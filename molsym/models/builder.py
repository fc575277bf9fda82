"""Model configuration: defaults, validation and the explicit table of families."""
from __future__ import annotations

from typing import Any

from molsym.nn.interactions.base import Family
from molsym.nn.interactions.e3nn_conv import E3NN
from molsym.nn.interactions.tensornet import TENSORNET

FAMILIES: dict[str, Family] = {"tensornet": TENSORNET, "e3nn": E3NN}

DEFAULTS: dict[str, Any] = {
    "family": "tensornet",
    "channels": 128,
    "layers": 2,
    "cutoff": 4.5,
    "num_radial": 32,
    "lmax": 2,
    "radial_hidden": 64,
    "avg_num_neighbors": 16.0,
    "e0": None,
    "scale": 1.0,
    "shift": 0.0,
}
REQUIRED = ("elements",)


def _check_positive(config: dict, key: str, kind: type) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, kind if kind is not float else (int, float)):
        raise TypeError(f"model config: {key!r} must be {kind.__name__}, got {value!r}")
    if value <= 0:
        raise ValueError(f"model config: {key!r} must be positive, got {value!r}")


def normalise_config(config: dict) -> dict:
    """Fill defaults and validate a model config; returns a new dict (plain data only)."""
    if not isinstance(config, dict):
        raise TypeError(f"model config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS) - set(REQUIRED))
    if unknown:
        raise ValueError(f"model config: unknown key(s) {unknown}; known keys are {sorted(set(DEFAULTS) | set(REQUIRED))}")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"model config: missing required key(s) {missing}")
    out = {**DEFAULTS, **config}
    elements = out["elements"]
    if (not isinstance(elements, (list, tuple)) or not elements
            or not all(isinstance(z, int) and not isinstance(z, bool) and 1 <= z <= 118 for z in elements)):
        raise ValueError(f"model config: 'elements' must be a non-empty list of atomic numbers 1..118, got {elements!r}")
    if len(set(elements)) != len(elements):
        raise ValueError(f"model config: 'elements' has duplicates: {elements!r}")
    out["elements"] = sorted(int(z) for z in elements)
    for key in ("channels", "layers", "num_radial", "radial_hidden"):
        _check_positive(out, key, int)
    for key in ("cutoff", "avg_num_neighbors", "scale"):
        _check_positive(out, key, float)
        out[key] = float(out[key])
    if isinstance(out["lmax"], bool) or not isinstance(out["lmax"], int) or out["lmax"] < 0:
        raise ValueError(f"model config: 'lmax' must be an integer >= 0, got {out['lmax']!r}")
    out["shift"] = float(out["shift"])
    families = out["family"]
    if isinstance(families, str):
        families = [families] * out["layers"]
    if not isinstance(families, (list, tuple)) or len(families) != out["layers"]:
        raise ValueError(
            f"model config: 'family' must be a name or a list of {out['layers']} names (one per layer), got {out['family']!r}"
        )
    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"model config: unknown family {name!r}; available: {sorted(FAMILIES)}")
    out["family"] = out["family"] if isinstance(out["family"], str) else list(families)
    if out["e0"] is not None:
        e0 = out["e0"]
        if not isinstance(e0, dict):
            raise TypeError(f"model config: 'e0' must map atomic numbers to energies (eV), got {e0!r}")
        e0 = {int(z): float(v) for z, v in e0.items()}
        extra = sorted(set(e0) - set(out["elements"]))
        if extra:
            raise ValueError(f"model config: 'e0' has elements {extra} that are not in 'elements'")
        out["e0"] = e0
    return out


def layer_families(config: dict) -> list[Family]:
    """The Family of each layer of a normalised config."""
    names = config["family"]
    if isinstance(names, str):
        names = [names] * config["layers"]
    return [FAMILIES[name] for name in names]
