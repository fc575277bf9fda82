"""Training throughput per family: structures per second of optimiser steps on 3BPA (energy + force loss).

Each step is what ``molsym train`` does per batch: energy and forces with the
graph kept, the weighted loss, the backward pass through the forces, AdamW.
Batches are collated once (data loading is not timed). Median of repeated
steps after warm-up.

Run from the repository root, with passive OpenMP waits::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_training.py [--threads 2] [--steps 20]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "3bpa_demo_train.xyz"

EXAMPLES = ROOT / "examples" / "3bpa"


def models() -> dict[str, dict]:
    """The default recipe's model (a config of data paths only), the model section of every
    examples/3bpa config, and the recipe's larger sizes (the 2-hour config at 64 and 128 channels)."""
    import yaml

    from molsym.train.recipe import model_config

    found = {"default recipe (train/recipe.py: TensorNet 32 channels, cutoff 4.5)": model_config({})}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        found[f"{path.stem} ({path.relative_to(ROOT)})"] = yaml.safe_load(path.read_text())["model"]
    two_hours = yaml.safe_load((EXAMPLES / "tensornet_2h.yaml").read_text())["model"]
    for channels in (64, 128):
        found[f"tensornet_2h at {channels} channels"] = {**two_hours, "channels": channels}
    return found


def batches(batch_size: int, count: int, dtype: torch.dtype, cutoff: float) -> list[dict]:
    from molsym.data.graph import collate
    from molsym.data.readers import read_samples, to_graph

    samples = read_samples(DATA)[: batch_size * count]
    graphs = [to_graph(sample, cutoff, dtype) for sample in samples]
    return [collate(graphs[i:i + batch_size]) for i in range(0, len(graphs), batch_size)]


def throughput(config: dict, batch_size: int, steps: int, warmup: int, dtype: torch.dtype) -> tuple[float, float]:
    """(median seconds per step, structures per second) for one model config."""
    import molsym
    from molsym.train.losses import error_sums, predict_batch, weighted_loss

    torch.manual_seed(0)
    model = molsym.Potential.from_config({**config, "elements": [1, 6, 7, 8]}).to(dtype)
    data = batches(batch_size, 4, dtype, model.cutoff)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    weights = {"energy": 1.0, "forces": 100.0, "stress": 0.0, "hessian": 0.0}

    def step(batch):
        out = predict_batch(model, batch, forces=True, stress=False, create_graph=True)
        sums = error_sums(out, batch, mask_fixed=True)
        loss = weighted_loss(sums, weights, {name: float(value[0]) for name, value in sums.items()}, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(warmup):
        step(data[i % len(data)])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(data[i % len(data)])
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, batch_size / median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"training throughput, 3BPA (27 atoms), batch {args.batch_size}, {args.dtype}, {args.threads} threads, "
          f"median of {args.steps} steps after {args.warmup} warm-up steps")
    print("| model | ms per step | structures/s |")
    print("| --- | ---: | ---: |")
    for name, config in models().items():
        seconds, rate = throughput(config, args.batch_size, args.steps, args.warmup, dtype)
        print(f"| {name} | {1000 * seconds:.1f} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
