"""Validation error against training time for several 3BPA runs, from their log.csv files.

    python examples/3bpa/plot_budget.py runs/3bpa/tensornet_2h_32 runs/3bpa/tensornet_2h_64 \
        --labels "TensorNet 32 ch" "TensorNet 64 ch" --output examples/3bpa/results/budget.png
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from molsym.train.plots import error_against_time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each with its log.csv)")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the directory names)")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error("give one --labels entry per run")
    histories = {}
    for label, run in zip(labels, args.runs):
        log = run / "log.csv"
        if not log.is_file():
            parser.error(f"{log} not found")
        with log.open(newline="") as f:
            histories[label] = list(csv.DictReader(f))
    print(error_against_time(histories, args.output, split=args.split, title="3BPA, 2-core CPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
