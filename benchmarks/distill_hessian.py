"""Self-distillation on 3BPA: a HIP Hessian head taught a trained model's own autograd Hessians.

Run from the repository root (one thread, about 15 minutes in all):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_hessian.py

1. Teacher: a TensorNet (32 channels x 2 layers, cutoff 4.5 Å, float32, seed 0) trained on
   energies and forces of 3BPA train_300K.xyz (molsym's training loop, --teacher-minutes;
   90% train / 10% validation), unless runs/distill/teacher/best.pt exists.
2. Labels: the teacher's exact autograd Hessians (float64) of --train frames of train_300K.xyz and
   --test frames of train_mixedT.xyz (300-1200 K structures, none of them seen by the head).
3. Student: the teacher's backbone, frozen, with a Hessian head (16 channels, cutoff 4.5 Å)
   whose parameters alone are trained on the MSE of every Hessian entry (AdamW 5e-3, --batch,
   cosine over --epochs, stopped at --head-minutes).

Reported on the held-out frames: MAE of the head against the teacher's Hessian (eV/Å²), the
mean |H| of the teacher's Hessians, and the MAE of the 3N - 6 projected frequencies (cm^-1).
Data: $MOLSYM_SHARED_DATA (default ../shared/data)/3bpa. Outputs under runs/distill/ (teacher/,
student.pt: the teacher with its distilled head, metrics.json).
"""
from __future__ import annotations

import argparse
import json
import math
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


def teacher_hessians(teacher, frames):
    import torch

    import molsym
    from molsym.models.derivatives import hessian

    model = teacher.double().eval()
    return [hessian(model, molsym.from_ase(atoms, model.cutoff, torch.float64)) for atoms in frames]


def main() -> None:
    import ase.io
    import numpy as np
    import torch

    import molsym
    from molsym.analysis import vibrations_from_hessian
    from molsym.data.graph import collate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-minutes", type=float, default=4.0)
    parser.add_argument("--head-minutes", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1, help="structures per step")
    parser.add_argument("--output", default=str(ROOT / "runs" / "distill"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    output = Path(args.output)
    teacher = molsym.load(train_teacher(output / "teacher", args.teacher_minutes))
    train_frames = ase.io.read(SHARED / "3bpa" / "train_300K.xyz", index=f":{args.train}")
    test_frames = ase.io.read(SHARED / "3bpa" / "train_mixedT.xyz", index=f":{args.test}")
    started = time.perf_counter()
    train_h, test_h = teacher_hessians(teacher, train_frames), teacher_hessians(teacher, test_frames)
    label_seconds = time.perf_counter() - started

    torch.manual_seed(0)
    config = {**teacher.config, "heads": {"hessian": {"channels": 16, "cutoff": 4.5}}}
    student = molsym.Potential.from_config(config).double()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("heads.") for k in missing), (missing, unexpected)
    head_params = [p for name, p in student.named_parameters() if name.startswith("heads.")]
    for name, p in student.named_parameters():
        p.requires_grad_(name.startswith("heads."))
    graphs = [molsym.from_ase(a, student.cutoff, torch.float64) for a in train_frames]
    optimizer = torch.optim.AdamW(head_params, lr=5e-3, weight_decay=5e-7, amsgrad=True)
    steps = math.ceil(len(graphs) / args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * steps, eta_min=1e-5)
    generator = torch.Generator().manual_seed(0)
    started, log = time.perf_counter(), []
    for epoch in range(args.epochs):
        order = torch.randperm(len(graphs), generator=generator).tolist()
        total = 0.0
        for first in range(0, len(order), args.batch):
            ids = order[first:first + args.batch]
            batch = collate([graphs[i] for i in ids])
            predicted = student(batch, heads=("hessian",))["hessian"]
            target = torch.block_diag(*[train_h[i] for i in ids])
            mask = torch.block_diag(*[torch.ones_like(train_h[i]) for i in ids])
            loss = ((predicted - target) * mask).pow(2).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        log.append({"epoch": epoch + 1, "mse": total / steps, "seconds": time.perf_counter() - started})
        print(json.dumps(log[-1]), flush=True)
        if time.perf_counter() - started > 60 * args.head_minutes:
            break
    student.eval()
    errors, freq_errors, scale = [], [], []
    with torch.no_grad():
        for atoms, reference in zip(test_frames, test_h):
            predicted = student(molsym.from_ase(atoms, student.cutoff, torch.float64), heads=("hessian",))["hessian"]
            errors.append((predicted - reference).abs().flatten().numpy())
            scale.append(reference.abs().mean().item())
            f_pred = vibrations_from_hessian(predicted.numpy(), atoms).frequencies
            f_ref = vibrations_from_hessian(reference.numpy(), atoms).frequencies
            freq_errors.append(np.abs(f_pred - f_ref))
    train_errors = []
    with torch.no_grad():
        for graph, reference in zip(graphs, train_h):
            train_errors.append((student(graph, heads=("hessian",))["hessian"] - reference).abs().flatten().numpy())
    result = {"train_frames": args.train, "test_frames": args.test, "epochs": len(log), "batch": args.batch,
              "head_seconds": log[-1]["seconds"], "label_seconds": label_seconds,
              "head_mae_ev_a2_test": float(np.concatenate(errors).mean()),
              "head_mae_ev_a2_train": float(np.concatenate(train_errors).mean()),
              "teacher_mean_abs_hessian_ev_a2": float(np.mean(scale)),
              "frequency_mae_cm1_test": float(np.concatenate(freq_errors).mean()), "loadavg": os.getloadavg()}
    molsym.save(student, output / "student.pt")
    tmp = output / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(output / "metrics.json")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
