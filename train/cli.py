"""Command line: ``molsym train CONFIG.yaml``, ``molsym eval --model CKPT --data FILE``,
``molsym export CKPT OUT`` (TorchScript for LAMMPS, ``molsym.export``) and
``molsym distil-hessian CKPT --structures FILE --output OUT`` (a Hessian head of the model's own
Hessians, ``molsym.heads.distill``).

The CLI only parses arguments, reads the config and calls the loop, the evaluator or the exporter.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from molsym.checkpoint import CheckpointError
from molsym.train.config import ConfigError, describe, read_yaml, validate_config
from molsym.train.distil_cli import distil_parser, run_distil


def _override(config: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the raw config dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set data.batch_size=4")
    key, text = assignment.split("=", 1)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({error})") from None
    node = config
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = value


def read_config(path: str, overrides: list[str], output: str | None) -> dict:
    """Read the YAML, apply ``--set`` overrides and ``--output``, then validate."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path!r}: the top level must be a mapping of sections")
    for assignment in overrides:
        _override(raw, assignment)
    if output is not None:
        raw["output"] = str(Path(output).resolve())
    return validate_config(raw, base_dir=Path(path).parent)


def _train_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML training config")
    parser.add_argument("--resume", action="store_true", help="continue the run in the config's output directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set epochs=5 --set data.batch_size=4")
    parser.add_argument("--output", help="output directory (overrides the config's)")
    parser.add_argument("--help-config", action="store_true", help="print every config key with its default")


def _eval_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (best.pt, last.pt or molsym.save file)")
    parser.add_argument("--data", required=True, nargs="+", help="labelled structures (extxyz, ASE db, aselmdb, ...)")
    parser.add_argument("--output", default=None, help="directory for the plots (default: beside the checkpoint)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="default: the checkpoint's")
    parser.add_argument("--energy-key", default="energy")
    parser.add_argument("--forces-key", default="forces")
    parser.add_argument("--stress-key", default=None, help="also evaluate stress stored under this key")
    parser.add_argument("--reference-energy-key", default=None,
                        help="per-structure reference energy to subtract (OC20: ref_energy)")
    parser.add_argument("--all-atoms", action="store_true", help="include fixed atoms in the force metrics")
    parser.add_argument("--exclude", nargs="+", default=None,
                        help="drop structures that also occur in these files (e.g. the training data)")


def _export_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint (best.pt, last.pt or molsym.save file)")
    parser.add_argument("output", help="TorchScript file to write (pair_style molsym in LAMMPS reads it)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")


def _run_export(args) -> int:
    from molsym.checkpoint import load
    from molsym.export import export

    metadata = export(load(args.model), args.output, dtype=args.dtype)
    print(f"wrote {args.output}: elements {' '.join(metadata['element_symbols'])}, cutoff {metadata['cutoff']} A, "
          f"message_hops {metadata['message_hops']} (ghost atoms needed out to "
          f"{metadata['message_hops'] * metadata['cutoff']:g} A), {metadata['dtype']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="molsym", description="Train and evaluate molsym potentials.")
    commands = parser.add_subparsers(dest="command", required=True)
    _train_parser(commands.add_parser("train", help="train a model from a YAML config"))
    _eval_parser(commands.add_parser("eval", help="metrics and parity plots of a checkpoint on labelled data"))
    _export_parser(commands.add_parser("export", help="write a checkpoint as TorchScript for LAMMPS (pair_style molsym)"))
    distil_parser(commands.add_parser("distil-hessian",
                                      help="teach a checkpoint's model a Hessian head of its own exact Hessians"))
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _run_train(args, parser)
        if args.command == "export":
            return _run_export(args)
        if args.command == "distil-hessian":
            return run_distil(args)
        from molsym.train.evaluation_cli import run_eval

        return run_eval(args)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"molsym {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run_train(args, parser) -> int:
    if args.help_config:
        print(describe())
        return 0
    if not args.config:
        parser.error("molsym train: give a CONFIG.yaml (or --help-config)")
    config = read_config(args.config, args.overrides, args.output)
    from molsym.train.loop import train

    train(config, resume=args.resume)
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """``python -m molsym.train CONFIG.yaml [options]``: the same as ``molsym train``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])
