"""Model configuration: defaults, validation, per-layer settings and the explicit table of families.

A model config is plain data (YAML, checkpoints)::

    {"elements": [1, 6, 7, 8],              # required: atomic numbers
     "family": "tensornet",                 # a name for every layer, or one entry per layer:
     #   ["tensornet", {"family": "e3nn", "lmax": 3, "paths": "all"}, {"family": "gaunt", "correlation": 3}]
     "layers": 2,                           # (the length of a family list by default)
     "cutoff": 4.5, "e0": None, "scale": 1.0, "shift": 0.0,   # model-level only
     "repulsion": None,                     # or {"type": "zbl", "cutoff": "covalent" | Å} (molsym.nn.repulsion)
     "heads": {"hessian": {"cutoff": 4.5}},  # optional heads (molsym.heads.registry)
     "channels": 128, "num_radial": 32, "radial_hidden": 64,
     "avg_num_neighbors": 16.0,             # global layer defaults
     "lmax": ...}                           # optional: for every layer that declares it

Every layer's settings are its family's frozen dataclass (``Family.settings``): a key takes
the layer's own entry if it has one, else the model's global value, else the dataclass
default. A top-level key that is not a model key must be declared by the family of at least
one layer (e.g. ``{"family": "e3nn", "paths": "all"}``); a family ignores global keys it does
not declare. Errors name the layer and the key, with the closest known key.
"""
from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any, NamedTuple

from molsym.heads.registry import normalise_heads
from molsym.nn.forms import FeatureForm, check_conversion
from molsym.nn.interactions.base import Family
from molsym.nn.interactions.e3nn_conv import E3NN
from molsym.nn.interactions.escn import ESCN
from molsym.nn.interactions.gaunt import GAUNT
from molsym.nn.interactions.tensornet import TENSORNET
from molsym.nn.repulsion import repulsion_config

FAMILIES: dict[str, Family] = {"tensornet": TENSORNET, "e3nn": E3NN, "escn": ESCN, "gaunt": GAUNT}

# keys of the whole model (not per layer)
MODEL_DEFAULTS: dict[str, Any] = {
    "family": "tensornet",
    "layers": 2,
    "cutoff": 4.5,
    "e0": None,
    "scale": 1.0,
    "shift": 0.0,
    "repulsion": None,
    "heads": None,
}
# global layer defaults: a layer of a family that declares the key takes it unless it overrides it
# ("lmax" has none: each spherical family has its own default, e.g. e3nn 2, escn 4; a top-level
# "lmax" applies to every layer that declares it)
LAYER_DEFAULTS: dict[str, Any] = {
    "channels": 128,
    "num_radial": 32,
    "radial_hidden": 64,
    "avg_num_neighbors": 16.0,
}
DEFAULTS: dict[str, Any] = {**MODEL_DEFAULTS, **LAYER_DEFAULTS}
REQUIRED = ("elements",)


class LayerSpec(NamedTuple):
    """One layer of a model: its family, resolved settings, and the feature forms it takes
    (after the core's conversion of the previous layer's output) and returns."""

    family: Family
    settings: Any
    input_form: FeatureForm
    output_form: FeatureForm


def embedding_form(specs: list["LayerSpec"]) -> FeatureForm:
    """The form of the initial features: the first layer's family embedding."""
    return specs[0].family.embedding_form(specs[0].settings)


def _family_keys(family: Family) -> list[str]:
    return [f.name for f in fields(family.settings)]


def _closest(key: str, known) -> str:
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _check_positive(config: dict, key: str, kind: type) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, kind if kind is not float else (int, float)):
        raise TypeError(f"model config: {key!r} must be {kind.__name__}, got {value!r}")
    if value <= 0:
        raise ValueError(f"model config: {key!r} must be positive, got {value!r}")


def _layer_entries(config: dict) -> list[tuple[str, dict]]:
    """(family name, the layer's own keys) per layer; validates names and the layer count."""
    family, layers = config["family"], config["layers"]
    entries = [family] * layers if isinstance(family, str) else family
    if not isinstance(entries, (list, tuple)) or len(entries) != layers:
        raise ValueError(
            f"model config: 'family' must be a name or a list of {layers} entries (one per layer), got {family!r}"
        )
    out = []
    for index, entry in enumerate(entries, start=1):
        if isinstance(entry, dict):
            entry = dict(entry)
            name = entry.pop("family", None)
            if name is None:
                raise ValueError(f"model config: layer {index}: a per-layer mapping needs a 'family' key, got {entry!r}")
        else:
            name, entry = entry, {}
        if not isinstance(name, str) or name not in FAMILIES:
            raise ValueError(f"model config: layer {index}: unknown family {name!r}"
                             f"{_closest(str(name), FAMILIES)}; available: {sorted(FAMILIES)}")
        out.append((name, entry))
    return out


def layer_specs(config: dict) -> list[LayerSpec]:
    """The family, settings and feature forms of every layer of a normalised config.

    Raises ValueError naming the layer for unknown keys, invalid values, and consecutive
    layers whose forms do not convert without loss (``molsym.nn.forms``).
    """
    specs, form = [], None
    for index, (name, own) in enumerate(_layer_entries(config), start=1):
        family = FAMILIES[name]
        keys = _family_keys(family)
        unknown = [k for k in own if k not in keys]
        if unknown:
            key = unknown[0]
            raise ValueError(f"model config: layer {index} ({name}): unknown key {key!r}{_closest(key, keys)}; "
                             f"a {name} layer takes {keys}")
        values = {k: own[k] if k in own else config[k] for k in keys if k in own or k in config}
        try:
            settings = family.settings(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model config: layer {index} ({name}): {error}") from None
        if form is None:
            form = family.embedding_form(settings)
        wanted = family.input_form(settings, form)
        check_conversion(form, wanted, f"model config: layer {index} ({name})")
        output = family.output_form(settings, wanted)
        specs.append(LayerSpec(family, settings, wanted, output))
        form = output
    return specs


def normalise_config(config: dict) -> dict:
    """Fill defaults and validate a model config; returns a new dict (plain data only).

    Layer settings are validated here too (:func:`layer_specs`), so every error surfaces
    before a model is built.
    """
    if not isinstance(config, dict):
        raise TypeError(f"model config must be a dict, got {type(config).__name__}")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"model config: missing required key(s) {missing}")
    out = {**DEFAULTS, **config}
    if isinstance(out["family"], (list, tuple)) and "layers" not in config:
        out["layers"] = len(out["family"])
    _check_positive(out, "layers", int)
    entries = _layer_entries(out)
    declared = {k for name, _ in entries for k in _family_keys(FAMILIES[name])}
    unknown = sorted(set(config) - set(DEFAULTS) - set(REQUIRED) - declared - {"lmax"})
    if unknown:
        known = set(DEFAULTS) | set(REQUIRED) | declared | {"lmax"}
        raise ValueError(f"model config: unknown key {unknown[0]!r}{_closest(unknown[0], known)}; "
                         f"known keys for these layers are {sorted(known)}")
    elements = out["elements"]
    if (not isinstance(elements, (list, tuple)) or not elements
            or not all(isinstance(z, int) and not isinstance(z, bool) and 1 <= z <= 118 for z in elements)):
        raise ValueError(f"model config: 'elements' must be a non-empty list of atomic numbers 1..118, got {elements!r}")
    if len(set(elements)) != len(elements):
        raise ValueError(f"model config: 'elements' has duplicates: {elements!r}")
    out["elements"] = sorted(int(z) for z in elements)
    for key in ("channels", "num_radial", "radial_hidden"):
        _check_positive(out, key, int)
    for key in ("cutoff", "avg_num_neighbors", "scale"):
        _check_positive(out, key, float)
        out[key] = float(out[key])
    if "lmax" in out and (isinstance(out["lmax"], bool) or not isinstance(out["lmax"], int) or out["lmax"] < 0):
        raise ValueError(f"model config: 'lmax' must be an integer >= 0, got {out['lmax']!r}")
    out["shift"] = float(out["shift"])
    if not isinstance(out["family"], str):
        out["family"] = [dict(e) if isinstance(e, dict) else e for e in out["family"]]
    if out["e0"] is not None:
        e0 = out["e0"]
        if not isinstance(e0, dict):
            raise TypeError(f"model config: 'e0' must map atomic numbers to energies (eV), got {e0!r}")
        e0 = {int(z): float(v) for z, v in e0.items()}
        extra = sorted(set(e0) - set(out["elements"]))
        if extra:
            raise ValueError(f"model config: 'e0' has elements {extra} that are not in 'elements'")
        out["e0"] = e0
    out["repulsion"] = repulsion_config(out["repulsion"], out["elements"], out["cutoff"])
    layer_specs(out)
    out["heads"] = normalise_heads(out["heads"], out["cutoff"])
    return out
