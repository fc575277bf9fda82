"""``molsym distil-hessian CKPT --structures FILE --output OUT``: give a checkpoint's potential a
Hessian head taught its own exact Hessians (``molsym.heads.distill``), written as a new checkpoint."""
from __future__ import annotations

import argparse
import json
import time


def distil_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint (best.pt, last.pt or molsym.save file)")
    parser.add_argument("--structures", required=True, nargs="+",
                        help="structure files (any ase.io format): the frames whose Hessians the head learns")
    parser.add_argument("--output", required=True, help="checkpoint to write: the model with its new head")
    parser.add_argument("--frames", type=int, default=None, help="use at most this many frames (default: all)")
    parser.add_argument("--test", nargs="+", default=None,
                        help="structure files to measure the head on afterwards (frames it did not learn)")
    parser.add_argument("--test-frames", type=int, default=50)
    parser.add_argument("--channels", type=int, default=32, help="the head's width")
    parser.add_argument("--cutoff", type=float, default=None, help="the head's cutoff, Å (default: the model's)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4, help="structures per step")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--max-time", type=float, default=None, help="stop training after this many minutes")
    parser.add_argument("--seed", type=int, default=0)


def _frames(paths, limit):
    from molsym.data.readers.extxyz import read_frames

    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ValueError(f"the number of frames must be a positive integer, got {limit}")
    frames = [atoms for path in paths for atoms in read_frames(path)]
    return frames if limit is None else frames[:limit]


def run_distil(args) -> int:
    import molsym
    from molsym.heads.distill import distil_hessian_head, exact_hessians, hessian_head_errors

    model = molsym.load(args.model)
    structures = _frames(args.structures, args.frames)
    tests = _frames(args.test, args.test_frames) if args.test else []
    head = {"channels": args.channels} if args.cutoff is None else {"channels": args.channels, "cutoff": args.cutoff}
    started = time.perf_counter()
    labels = exact_hessians(model, structures)
    print(f"exact Hessians of {len(structures)} structures: {time.perf_counter() - started:.1f} s", flush=True)

    def progress(row):
        print(f"epoch {row['epoch']} | Hessian MSE {row['mse']:.4g} (eV/Å²)² | {row['seconds']:.0f} s", flush=True)

    student = distil_hessian_head(model, structures, labels=labels, head=head, epochs=args.epochs, batch=args.batch,
                                  lr=args.lr, seed=args.seed, progress=progress,
                                  max_seconds=None if args.max_time is None else 60.0 * args.max_time)
    summary = {"train": hessian_head_errors(student, structures, labels)}
    if tests:
        summary["test"] = hessian_head_errors(student, tests)
    molsym.save(student, args.output, metadata={"distillation": {"structures": len(structures), **summary}})
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.output}: the model of {args.model} with a Hessian head of {args.channels} channels")
    return 0
