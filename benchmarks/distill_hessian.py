"""Self-distillation on 3BPA: a HIP Hessian head taught a trained model's own autograd Hessians.

Run from the repository root (one thread, about 15 minutes in all):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_hessian.py

1. Teacher: a TensorNet (32 channels x 2 layers, cutoff 4.5 Å, float32, seed 0) trained on
   energies and forces of 3BPA train_300K.xyz (molsym's training loop, --teacher-minutes;
   90% train / 10% validation), unless runs/distill/teacher/best.pt exists.
2. Labels: the teacher's exact autograd Hessians (float64) of --train frames of train_300K.xyz and
   --test frames of train_mixedT.xyz (300-1200 K structures, none of them seen by the head).
3. Student: the teacher's backbone, frozen, with a Hessian head (--channels, cutoff 4.5 Å)
   whose parameters alone are trained on the MSE of every Hessian entry
   (``molsym.heads.distill.distil_hessian_head``: AdamW --lr, --batch, cosine over --epochs,
   stopped at --head-minutes).

Any other trained model: ``--teacher CHECKPOINT --train-file ... --test-file ...``, e.g. the
ethanol student of the transition-state table in the README:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_hessian.py --teacher runs/ethanol/best.pt \\
        --train-file ../shared/data/ethanol/train.xyz --test-file ../shared/data/ethanol/test_MD.xyz \\
        --train 300 --test 50 --channels 32 --batch 4 --epochs 60 --output runs/distill_ethanol

Reported on the held-out frames: MAE of the head against the teacher's Hessian (eV/Å²), the
mean |H| of the teacher's Hessians, and the MAE of the 3N - 6 projected frequencies (cm^-1).
Data: $MOLSYM_SHARED_DATA (default ../shared/data)/3bpa. Outputs under runs/distill/ (teacher/,
student.pt: the teacher with its distilled head, metrics.json).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOLSYM_SHARED_DATA", ROOT.parent / "shared" / "data"))
E0 = {1: -13.587222780835477, 6: -1029.4889999855063, 7: -1484.9814568572233, 8: -2041.9816003861047}


def train_teacher(output: Path, minutes: float) -> Path:
    from molsym.train.config import validate_config
    from molsym.train.loop import train

    best = output / "best.pt"
    if best.exists():
        return best
    raw = {"output": str(output), "seed": 0, "dtype": "float32", "device": "cpu", "max_time": f"{minutes}m",
           "model": {"family": "tensornet", "channels": 32, "layers": 2, "cutoff": 4.5, "num_radial": 8},
           "data": {"train": str(SHARED / "3bpa" / "train_300K.xyz"), "valid_fraction": 0.1, "e0": E0},
           "loss": {"energy": 27.0, "forces": 1000.0}}
    train(validate_config(raw, base_dir=ROOT))
    return best


def main() -> None:
    import ase.io
    import torch

    import molsym
    from molsym.heads.distill import distil_hessian_head, exact_hessians, hessian_head_errors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-minutes", type=float, default=4.0)
    parser.add_argument("--head-minutes", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1, help="structures per step")
    parser.add_argument("--output", default=str(ROOT / "runs" / "distill"))
    parser.add_argument("--teacher", default=None, help="a trained checkpoint to distil instead of the 3BPA teacher")
    parser.add_argument("--train-file", default=str(SHARED / "3bpa" / "train_300K.xyz"))
    parser.add_argument("--test-file", default=str(SHARED / "3bpa" / "train_mixedT.xyz"))
    parser.add_argument("--channels", type=int, default=16, help="the head's width")
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    output = Path(args.output)
    teacher = molsym.load(args.teacher or train_teacher(output / "teacher", args.teacher_minutes))
    train_frames = ase.io.read(args.train_file, index=f":{args.train}")
    test_frames = ase.io.read(args.test_file, index=f":{args.test}")
    started = time.perf_counter()
    train_h, test_h = exact_hessians(teacher, train_frames), exact_hessians(teacher, test_frames)
    label_seconds = time.perf_counter() - started
    log = []

    def progress(row):
        log.append(row)
        print(json.dumps(row), flush=True)

    student = distil_hessian_head(teacher, train_frames, labels=train_h,
                                  head={"channels": args.channels, "cutoff": min(4.5, teacher.cutoff)},
                                  epochs=args.epochs, batch=args.batch, lr=args.lr,
                                  max_seconds=60 * args.head_minutes, progress=progress)
    test = hessian_head_errors(student, test_frames, test_h)
    train_errors = hessian_head_errors(student, train_frames, train_h)
    result = {"train_frames": args.train, "test_frames": args.test, "epochs": len(log), "batch": args.batch,
              "channels": args.channels, "head_seconds": log[-1]["seconds"], "label_seconds": label_seconds,
              "head_mae_ev_a2_test": test["hessian_mae_ev_a2"],
              "head_mae_ev_a2_train": train_errors["hessian_mae_ev_a2"],
              "teacher_mean_abs_hessian_ev_a2": test["mean_abs_hessian_ev_a2"],
              "frequency_mae_cm1_test": test["frequency_mae_cm1"], "loadavg": os.getloadavg()}
    molsym.save(student, output / "student.pt")
    tmp = output / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(output / "metrics.json")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
