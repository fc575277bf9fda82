"""Training configuration: the YAML schema, its defaults, and validation before any work starts.

A config is a YAML mapping with these sections (every key optional unless
marked required; ``molsym train --help-config`` prints this table)::

    output: runs/my_model        # directory for checkpoints, log.csv, TensorBoard
    seed: 0
    dtype: float64               # float32 | float64
    device: auto                 # auto | cpu | cuda | cuda:N
    model: {family: tensornet, channels: 32, ...}   # Potential config; 'elements' from the data if absent,
                                 # the recipe's (train/recipe.py) family, channels, layers, cutoff,
                                 # num_radial, radial_hidden where absent
    data:
      train: train.xyz           # required: a file, a list of files, or a directory of .aselmdb/.db
      valid: null                # a file; or split valid_fraction off train
      valid_fraction: 0.1
      test: null                 # evaluated at the end with the best weights
      ...                        # see DATA below
    loss: {energy: 27.0, forces: 1000.0, stress: 0.0, hessian: 0.0, hessian_rows: 2, hessian_head: 0.0}
    optimizer: {lr: auto, weight_decay: 5e-7, betas: [0.9, 0.999], amsgrad: true}
    schedule: {type: cosine, warmup_epochs: 1, min_lr: 1e-5, fit_to_budget: true}
    ema: {decay: 0.99}           # or null for none
    guard: {factor: 10, lr_factor: 0.5, max_nonfinite: 3}   # divergence guard, or null for none
    stage_two: null              # or {start: 0.75, energy: 1000, forces: 100}: reweight the loss for
                                 # the last quarter of the run (molsym.train.stages)
    clip_grad_norm: 10.0         # or null
    epochs: auto                 # about 6000 optimiser steps; the cosine is fitted to max_time
    max_time: null               # wall-clock budget: seconds, or "90s", "20m", "2h"
    ...

Validation reports every problem it finds at once (unknown keys with the
closest known name, wrong types, out-of-range values, missing files), each
named by its dotted path, in one :class:`ConfigError`.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from molsym.train import recipe


class ConfigError(ValueError):
    """The training config is invalid; the message lists every problem by its dotted key path."""


@dataclass(frozen=True)
class Field:
    """One config key: accepted types, default, an optional check, and its meaning."""

    types: tuple
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None
    nullable: bool = False
    type_doc: str | None = None  # what the type errors call the accepted values (default: the types' names)


def _positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _fraction(value) -> str | None:
    return None if 0 <= value < 1 else "must lie in [0, 1)"


def _unit_interval_open(value) -> str | None:
    return None if 0 < value < 1 else "must lie in (0, 1)"


def _positive_or_auto(kind: str) -> Callable[[Any], str | None]:
    """Check of a key that is a positive ``kind`` ("integer" or "number") or the word auto."""
    def check(value):
        if value == "auto":
            return None
        if isinstance(value, str):
            return f"must be a positive {kind} or auto"
        return _positive(value)

    return check


def _one_of(*choices) -> Callable[[Any], str | None]:
    def check(value):
        return None if value in choices else f"must be one of {list(choices)}"

    return check


def _betas(value) -> str | None:
    if len(value) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in value):
        return "must be two numbers in [0, 1)"
    return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(s|sec|m|min|h|hr|d)?\s*$")
_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"20m"``, ``"1.5h"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (use seconds, or e.g. '90s', '20m', '2h')")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def _duration(value) -> str | None:
    try:
        return None if parse_duration(value) > 0 else "must be a positive duration"
    except ValueError as error:
        return str(error)


NUMBER = (int, float)
PATHS = (str, list)

TOP = {
    "output": Field((str,), "runs/molsym", "directory for checkpoints (best.pt, last.pt), log.csv and TensorBoard"),
    "seed": Field((int,), 0, "seed of weights, data order and every random choice"),
    "dtype": Field((str,), "float64", "float32 or float64, end to end", _one_of("float32", "float64")),
    "device": Field((str,), "auto", "auto (cuda when available), cpu, cuda or cuda:N",
                    lambda v: None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) else "must be auto, cpu, cuda or cuda:N"),
    "epochs": Field((int, str), "auto", "passes over the training data; auto: about 6000 optimiser steps "
                    "(10 to 1000 epochs)", _positive_or_auto("integer"),
                    type_doc="integer or auto"),
    "max_time": Field((int, float, str), None, "wall-clock budget of the run (seconds or '20m', '2h'); "
                      "training stops after the step that crosses it, "
                      "writes last.pt and can be resumed", _duration, nullable=True),
    "clip_grad_norm": Field(NUMBER, 10.0, "clip the gradient's global L2 norm to this (null: no clipping)",
                            _positive, nullable=True),
    "eval_every": Field((int,), 1, "validate every this many epochs (and after the last)", _positive),
    "progress": Field((bool,), True, "tqdm progress bars on rank 0"),
    "tensorboard": Field((bool, str), "auto", "write TensorBoard events: true, false or auto (when installed)",
                         lambda v: None if v in (True, False, "auto") else "must be true, false or auto"),
    "save_every": Field((int,), 1, "write last.pt every this many epochs", _positive),
}

DATA = {
    "train": Field(PATHS, None, "required: training data file(s) (extxyz and anything ASE reads, .db, .json, "
                   ".aselmdb, OC20 S2EF .extxyz) or a directory of .aselmdb/.db files"),
    "valid": Field(PATHS, None, "validation data; if absent, valid_fraction of train is held out", nullable=True),
    "valid_fraction": Field(NUMBER, 0.1, "fraction of train held out for validation when 'valid' is absent", _fraction),
    "test": Field(PATHS, None, "test data, evaluated with the best weights at the end", nullable=True),
    "test_exclude_train": Field((bool,), False, "drop test structures that also occur in train "
                                "(same atomic numbers and positions within 1e-6 Å)"),
    "format": Field((str,), "auto", "auto (by suffix), ase (ase.io.read), db (ASE db), oc20_s2ef or horm "
                    "(HORM arrays in a .npz: molsym.data.readers.horm)", _one_of("auto", "ase", "db", "oc20_s2ef", "horm")),
    "energy_key": Field((str,), "energy", "name of the energy label (calculator results, info, db data)", nullable=True),
    "forces_key": Field((str,), "forces", "name of the forces label", nullable=True),
    "stress_key": Field((str,), "stress", "name of the stress label (eV/Å³, ASE sign)", nullable=True),
    "hessian_key": Field((str,), "hessian", "name of the Hessian label (eV/Å², (3n, 3n))", nullable=True),
    "virial_key": Field((str,), None, "name of a virial label (eV), used when no stress is found", nullable=True),
    "reference_energy_key": Field((str,), None, "per-structure reference energy subtracted from the energy "
                                  "(OC20: ref_energy)", nullable=True),
    "e0": Field((str, dict), "least_squares", "per-element energies: 'least_squares' (fit on train), "
                "'isolated_atoms' file path, a mapping {Z: eV}, or null (none)", nullable=True),
    "fixed_atoms": Field((bool,), True, "leave atoms held fixed (FixAtoms, OC20 move_mask) out of the force loss"),
    "batch_size": Field((int, str), "auto", "structures per optimiser step (the global batch, over all ranks); "
                        "auto: n_train // 45 within [4, 32]", _positive_or_auto("integer"),
                        type_doc="integer or auto"),
    "valid_batch_size": Field((int,), 16, "structures per batch when evaluating", _positive),
    "num_workers": Field((int,), 0, "DataLoader worker processes", _non_negative),
    "in_memory": Field((str, bool), "auto", "read files whole into memory (auto: everything but .aselmdb/.db)",
                       lambda v: None if v in (True, False, "auto") else "must be true, false or auto"),
    "max_structures": Field((int,), None, "use only the first this many training structures", _positive,
                            nullable=True),
    "statistics_structures": Field((int,), 2000, "structures sampled for E0, shift, scale and neighbour counts",
                                   _positive),
}

LOSS = {
    "energy": Field(NUMBER, 27.0, "weight of the energy-per-atom MSE ((eV/atom)^-2)", _non_negative),
    "forces": Field(NUMBER, 1000.0, "weight of the force-component MSE ((eV/Å)^-2)", _non_negative),
    "stress": Field(NUMBER, 0.0, "weight of the stress-component MSE ((eV/Å³)^-2)", _non_negative),
    "hessian": Field(NUMBER, 0.0, "weight of the Hessian-entry MSE ((eV/Å²)^-2), on sampled rows", _non_negative),
    "hessian_rows": Field((int,), 2, "Hessian rows per structure sampled in each step", _positive),
    "hessian_head": Field(NUMBER, 0.0, "weight of the MSE ((eV/Å²)^-2) of the Hessian head's entries (every entry "
                          "of each structure's (3n, 3n) block; needs model.heads.hessian)", _non_negative),
    "hessian_eigen": Field(NUMBER, 0.0, "weight of the MSE ((eV/Å²)^-2) of the Hessian head's residuals H v - lambda v "
                           "on the hessian_eigen_k lowest eigenpairs of each reference Hessian; needs model.heads.hessian",
                           _non_negative),
    "hessian_eigen_k": Field((int,), 8, "eigenpairs per structure of the hessian_eigen term", _positive),
}

OPTIMIZER = {
    "lr": Field((int, float, str), "auto", "AdamW learning rate; auto: 0.01 x min(1, sqrt(32 / the model's widest channels))",
                _positive_or_auto("number"), type_doc="number or auto"),
    "weight_decay": Field(NUMBER, 5e-7, "AdamW decoupled weight decay", _non_negative),
    "betas": Field((list,), [0.9, 0.999], "AdamW betas", _betas),
    "eps": Field(NUMBER, 1e-8, "AdamW epsilon", _positive),
    "amsgrad": Field((bool,), True, "AMSGrad variant"),
}

SCHEDULE = {
    "type": Field((str,), "cosine", "plateau (reduce on validation-loss plateau), cosine (with warm-up, over "
                  "'epochs', shortened to fit max_time: see fit_to_budget) or constant",
                  _one_of("plateau", "cosine", "constant")),
    "factor": Field(NUMBER, 0.8, "plateau: multiply the LR by this", _unit_interval_open),
    "patience": Field((int,), 10, "plateau: epochs without improvement before reducing", _non_negative),
    "threshold": Field(NUMBER, 1e-4, "plateau: relative improvement that counts", _non_negative),
    "warmup_epochs": Field(NUMBER, 1, "linear warm-up from lr * warmup_start over this many epochs (any type)",
                           _non_negative),
    "warmup_start": Field(NUMBER, 0.01, "warm-up starting fraction of lr", _fraction),
    "min_lr": Field(NUMBER, 1e-5, "floor of the LR (cosine end, plateau minimum, guard reductions)", _non_negative),
    "fit_to_budget": Field((bool,), True, "cosine with max_time: after each epoch, shorten the cosine to the steps "
                           "the remaining budget allows at the speed measured so far, so the run anneals "
                           "before its budget ends"),
}

GUARD = {
    "factor": Field(NUMBER, 10.0, "a step whose loss exceeds this x the running median is a spike",
                    lambda v: None if v > 1 else "must be > 1"),
    "window": Field((int,), 50, "steps in the running median of the loss; good steps in a row that close "
                    "an episode of events", _positive),
    "min_steps": Field((int,), 10, "accepted steps before spikes are judged (non-finite losses always are)",
                       _positive),
    "lr_factor": Field(NUMBER, 0.5, "multiply the LR by this at the first event (spike or non-finite step) of "
                       "every episode", lambda v: None if 0 < v <= 1 else "must lie in (0, 1]"),
    "max_spikes": Field((int,), 5, "spikes in one episode after which the loss counts as the new level", _positive),
    "max_nonfinite": Field((int,), 3, "non-finite steps in a row that stop training (non-zero exit)", _positive),
}

STAGE_TWO = {
    "start": Field(NUMBER, 0.75, "fraction of the run (of its optimiser steps as planned, or of max_time, whichever "
                   "is further along) after which stage two begins", lambda v: None if 0 < v < 1 else "must lie in (0, 1)"),
    "energy": Field(NUMBER, 1000.0, "stage two's energy-per-atom weight ((eV/atom)^-2), replacing loss.energy",
                    _non_negative, nullable=True),
    "forces": Field(NUMBER, 100.0, "stage two's force-component weight ((eV/Å)^-2), replacing loss.forces",
                    _non_negative, nullable=True),
    "stress": Field(NUMBER, None, "stage two's stress weight ((eV/Å³)^-2), replacing loss.stress; null keeps it",
                    _non_negative, nullable=True),
}

EMA = {
    "decay": Field(NUMBER, 0.99, "exponential moving average of the weights: w_ema <- d w_ema + (1 - d) w",
                   _unit_interval_open),
}

SECTIONS: dict[str, dict[str, Field]] = {
    "data": DATA,
    "loss": LOSS,
    "optimizer": OPTIMIZER,
    "schedule": SCHEDULE,
    "ema": EMA,
    "guard": GUARD,
    "stage_two": STAGE_TWO,
}
NULLABLE_SECTIONS = ("ema", "guard", "stage_two")
OFF_BY_DEFAULT = ("stage_two",)  # absent means null


def _type_name(types: tuple) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list", dict: "mapping"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check_value(path: str, field: Field, value, problems: list[str]) -> Any:
    if value is None:
        if not field.nullable:
            problems.append(f"{path}: must not be null ({field.doc})")
        return None
    if isinstance(value, bool) and bool not in field.types:
        problems.append(f"{path}: expected {field.type_doc or _type_name(field.types)}, got boolean {value!r}")
        return value
    if not isinstance(value, field.types):
        problems.append(f"{path}: expected {field.type_doc or _type_name(field.types)}, "
                        f"got {type(value).__name__} {value!r}")
        return value
    if field.check is not None:
        message = field.check(value)
        if message:
            problems.append(f"{path}: {value!r} {message}")
    return value


def _unknown(path: str, given: dict, known, problems: list[str]) -> None:
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {sorted(known)}"
            problems.append(f"{path}{key}: unknown key{hint}")


def _fill(path: str, schema: dict[str, Field], given: dict, problems: list[str]) -> dict:
    _unknown(path, given, schema, problems)
    return {key: _check_value(f"{path}{key}", field, given.get(key, field.default), problems)
            for key, field in schema.items()}


def _check_paths(path: str, value, base: Path, problems: list[str]) -> list[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) for item in items):
        problems.append(f"{path}: expected a file path or a list of file paths, got {value!r}")
        return None
    resolved = []
    for item in items:
        candidate = Path(os.path.expanduser(item))
        if not candidate.is_absolute():
            candidate = base / candidate
        if not candidate.exists():
            problems.append(f"{path}: file {item!r} does not exist (looked for {candidate})")
        resolved.append(str(candidate))
    return resolved


def validate_config(raw, base_dir: str | os.PathLike = ".") -> dict:
    """Fill defaults and check a training config; relative paths resolve against ``base_dir``.

    Returns a new dict with every section complete. Raises :class:`ConfigError`
    listing all problems found.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: the top level must be a mapping of sections, got {type(raw).__name__}")
    base = Path(base_dir)
    problems: list[str] = []
    known = set(TOP) | set(SECTIONS) | {"model"}
    _unknown("", raw, known, problems)
    config = {key: _check_value(key, field, raw.get(key, field.default), problems) for key, field in TOP.items()}
    for name, schema in SECTIONS.items():
        given = raw.get(name, None if name in OFF_BY_DEFAULT else {})
        if given is None and name in NULLABLE_SECTIONS:
            config[name] = None
            continue
        if given is None:
            given = {}
        if not isinstance(given, dict):
            problems.append(f"{name}: expected a mapping, got {type(given).__name__} {given!r}")
            given = {}
        config[name] = _fill(f"{name}.", schema, given, problems)
    config["model"] = _check_model(raw.get("model", {}), problems)
    if config["optimizer"]["lr"] == "auto":
        try:
            config["optimizer"]["lr"] = recipe.learning_rate(config["model"])
        except (TypeError, ValueError):  # invalid channels: reported with the model's problems
            pass
    data = config["data"]
    if raw.get("data", {}) is None or "train" not in (raw.get("data") or {}):
        problems.append("data.train: required (the training data file(s))")
    else:
        data["train"] = _check_paths("data.train", data["train"], base, problems)
    for split in ("valid", "test"):
        data[split] = _check_paths(f"data.{split}", data[split], base, problems)
    e0 = data["e0"]
    if isinstance(e0, str) and e0 != "least_squares":
        resolved = _check_paths("data.e0", e0, base, problems)
        data["e0"] = resolved[0] if resolved else e0
    elif isinstance(e0, dict):
        data["e0"] = _check_e0_mapping(e0, problems)
    if config["output"] is not None and not os.path.isabs(os.path.expanduser(config["output"])):
        config["output"] = str(base / config["output"])
    if isinstance(config["max_time"], (str, int, float)) and not _duration(config["max_time"]):
        config["max_time"] = parse_duration(config["max_time"])
    loss = config["loss"]
    stage_two = config["stage_two"]
    if stage_two is not None and all(
            (loss[name] if stage_two[name] is None else stage_two[name]) == 0 for name in ("energy", "forces", "stress")
    ) and all(loss[name] == 0 for name in ("hessian", "hessian_head", "hessian_eigen")):
        problems.append("stage_two: every weight of stage two is 0; give energy, forces or stress a positive weight")
    if all(loss[name] == 0 for name in ("energy", "forces", "stress", "hessian", "hessian_head", "hessian_eigen")):
        problems.append("loss: every weight is 0; give at least one of energy, forces, stress, hessian, "
                        "hessian_head, hessian_eigen a positive weight")
    heads = config["model"].get("heads") if isinstance(config["model"], dict) else None
    if isinstance(loss["hessian_head"], (int, float)) and loss["hessian_head"] > 0 and not (
            isinstance(heads, dict) and "hessian" in heads):
        problems.append("loss.hessian_head is positive but the model has no Hessian head: "
                        "add model.heads.hessian (e.g. heads: {hessian: {cutoff: 4.5}})")
    if isinstance(loss["hessian_eigen"], (int, float)) and loss["hessian_eigen"] > 0 and not (
            isinstance(heads, dict) and "hessian" in heads):
        problems.append("loss.hessian_eigen is positive but the model has no Hessian head: "
                        "add model.heads.hessian (e.g. heads: {hessian: {cutoff: 4.5}})")
    if config["tensorboard"] is True and importlib.util.find_spec("tensorboard") is None:
        problems.append("tensorboard: true, but the tensorboard package is not installed "
                        "(pip install tensorboard, or set tensorboard: auto)")
    if problems:
        raise ConfigError("invalid training config:\n  - " + "\n  - ".join(problems))
    return config


def _check_e0_mapping(e0: dict, problems: list[str]) -> dict | None:
    out = {}
    for z, value in e0.items():
        if isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 118:
            problems.append(f"data.e0: key {z!r} is not an atomic number 1..118")
        elif isinstance(value, bool) or not isinstance(value, NUMBER):
            problems.append(f"data.e0.{z}: expected a number (eV), got {value!r}")
        else:
            out[z] = float(value)
    return out


def _check_model(model, problems: list[str]) -> dict:
    """Validate the model section with the model's own schema (elements may come from the data)."""
    from molsym.models.builder import normalise_config

    if model is None:
        model = {}
    if not isinstance(model, dict):
        problems.append(f"model: expected a mapping, got {type(model).__name__} {model!r}")
        return {}
    model = recipe.model_config(model)
    probe = dict(model)
    probe.setdefault("elements", [1])
    try:
        normalise_config(probe)
    except (TypeError, ValueError) as error:
        problems.append(str(error))
    return dict(model)


def read_yaml(path: str | os.PathLike) -> dict:
    """The raw mapping of a YAML config file, read with ``yaml.safe_load``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    return {} if raw is None else raw


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config and validate it; relative paths resolve against the file's directory."""
    return validate_config(read_yaml(path), base_dir=Path(path).parent)


def describe() -> str:
    """Every key with its default and meaning, as text (``molsym train --help-config``)."""
    lines = []
    for title, schema in [("(top level)", TOP), *SECTIONS.items()]:
        lines.append(f"{title}:")
        for key, field in schema.items():
            lines.append(f"  {key}: {field.default!r}  # {field.doc}")
    lines.append("model: a Potential config (family: a name or one entry per layer, each a name or "
                 "{family: NAME, ...that layer's keys}; channels, layers, cutoff, num_radial, lmax, ...); "
                 "elements default to those in the data (every structure held in memory; a sample of "
                 "statistics_structures of streamed databases, so name them for large databases), "
                 "e0 / scale / shift / avg_num_neighbors to the data statistics")
    return "\n".join(lines)
