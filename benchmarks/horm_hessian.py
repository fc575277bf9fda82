"""HORM: train a TensorNet with a Hessian head on 80 of the 100 HORM molecules, test on the other 20.

Run from the repository root (one thread; each variant is one process, <= 15 minutes):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/horm_hessian.py --variant plain
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/horm_hessian.py --variant sum_rule
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/horm_hessian.py --variant eigen
    .venv/bin/python benchmarks/horm_hessian.py --summary benchmarks/results/horm_hessian.json

Data: $MOLSYM_SHARED_DATA (default ../shared/data)/horm_sample100/sample_100_DERIVED.npz
(CC BY-NC-SA; read in place, never copied). Split: a permutation of the 100 molecules with numpy seed 3, first 80 train, last 20 test.
Model (seed 0, float32): TensorNet 32 channels x 2 layers, cutoff 5 Å, Hessian head 16 channels,
cutoff 5 Å. Loss: energy per atom (``ae``, the energy minus per-element references) 1 + forces 10
+ Hessian head 1 (+ hessian_eigen 1 on the 8 lowest reference eigenpairs for ``eigen``);
``sum_rule`` trains a head with the exact translational sum rule. AdamW lr 5e-3, batch 8, cosine
to 1e-5 over ``--epochs``, stopped early at ``--minutes``.

Test metrics on the 20 held-out molecules: MAE of every Hessian entry (eV/Å²) of the head (and of
the model's exact autograd Hessian, for comparison), and the frequency MAE (cm^-1) between the
3N - 6 projected frequencies (``molsym.analysis.vibrations_from_hessian``, sorted) of the
predicted and the reference Hessian, over all modes of all test molecules. Outputs under
runs/horm/<variant>/ (metrics.json, model.pt); ``--summary`` gathers the metrics.
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
DATA = SHARED / "horm_sample100" / "sample_100_DERIVED.npz"
VARIANTS = {
    "plain": ({"sum_rule": False}, {"energy": 1.0, "forces": 10.0, "hessian_head": 1.0}),
    "sum_rule": ({"sum_rule": True}, {"energy": 1.0, "forces": 10.0, "hessian_head": 1.0}),
    "eigen": ({"sum_rule": False}, {"energy": 1.0, "forces": 10.0, "hessian_head": 1.0, "hessian_eigen": 1.0}),
}
EIGEN_K = 8


def split(count: int = 100, seed: int = 3):
    import numpy as np

    order = np.random.default_rng(seed).permutation(count)
    return sorted(order[:80].tolist()), sorted(order[80:].tolist())


def frequency_errors(predicted, reference, atoms):
    """|f_pred - f_ref| (cm^-1) of the sorted projected frequencies of one molecule."""
    import numpy as np

    from molsym.analysis import vibrations_from_hessian

    f_pred = vibrations_from_hessian(predicted, atoms).frequencies
    f_ref = vibrations_from_hessian(reference, atoms).frequencies
    return np.abs(f_pred - f_ref)


def test_metrics(model, samples) -> dict:
    import numpy as np
    import torch

    import molsym
    from molsym.data import keys as K
    from molsym.models.derivatives import hessian

    model = model.double().eval()
    head_err, exact_err, head_freq, exact_freq = [], [], [], []
    for sample in samples:
        graph = molsym.from_ase(sample.atoms, model.cutoff, torch.float64)
        with torch.no_grad():
            head = model(graph, heads=("hessian",))["hessian"].numpy()
        exact = hessian(model, graph).numpy()
        reference = np.asarray(sample.targets[K.HESSIAN], dtype=np.float64).reshape(head.shape)
        head_err.append(np.abs(head - reference).ravel())
        exact_err.append(np.abs(exact - reference).ravel())
        head_freq.append(frequency_errors(head, reference, sample.atoms))
        exact_freq.append(frequency_errors(exact, reference, sample.atoms))
    cat = np.concatenate
    return {"hessian_head_mae_ev_a2": float(cat(head_err).mean()),
            "hessian_autograd_mae_ev_a2": float(cat(exact_err).mean()),
            "frequency_head_mae_cm1": float(cat(head_freq).mean()),
            "frequency_autograd_mae_cm1": float(cat(exact_freq).mean()),
            "reference_mean_abs_hessian_ev_a2": float(np.mean([np.abs(np.asarray(s.targets[K.HESSIAN])).mean()
                                                              for s in samples]))}


def train(variant: str, epochs: int, minutes: float, output: Path) -> dict:
    import numpy as np
    import torch

    import molsym
    from molsym.data import keys as K
    from molsym.data.graph import collate
    from molsym.data.readers.horm import read_horm_npz
    from molsym.data.readers.sample import to_graph
    from molsym.train.losses import error_sums, predict_batch, weighted_loss

    torch.set_num_threads(1)
    torch.manual_seed(0)
    head_settings, weights = VARIANTS[variant]
    train_ids, test_ids = split()
    train_samples = read_horm_npz(DATA, train_ids, energy="ae")
    test_samples = read_horm_npz(DATA, test_ids, energy="ae")
    config = {"family": "tensornet", "channels": 32, "layers": 2, "cutoff": 5.0, "elements": [1, 6, 7, 8],
              "heads": {"hessian": {"channels": 16, "cutoff": 5.0, **head_settings}}}
    model = molsym.Potential.from_config(config).float()
    per_atom = [s.targets[K.ENERGY] / len(s.atoms) for s in train_samples]
    force_rms = math.sqrt(np.mean([np.mean(np.square(s.targets[K.FORCES])) for s in train_samples]))
    model.set_energy_reference(scale=force_rms, shift=float(np.mean(per_atom)))
    graphs = [to_graph(s, model.cutoff, torch.float32) for s in train_samples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=5e-7, amsgrad=True)
    steps_per_epoch = math.ceil(len(graphs) / 8)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch, eta_min=1e-5)
    generator = torch.Generator().manual_seed(0)
    eigen = EIGEN_K if weights.get("hessian_eigen", 0) > 0 else 0
    started, log = time.perf_counter(), []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(graphs), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), 8):
            batch = collate([graphs[i] for i in order[start:start + 8]])
            out = predict_batch(model, batch, forces=True, stress=False, hessian_head=True, create_graph=True)
            sums = error_sums(out, batch, mask_fixed=False, eigen_pairs=eigen)
            loss = weighted_loss(sums, weights, {k: float(v[0]) for k, v in sums.items()}, 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        log.append({"epoch": epoch + 1, "loss": total / steps_per_epoch, "seconds": time.perf_counter() - started})
        print(json.dumps(log[-1]), flush=True)
        if time.perf_counter() - started > 60 * minutes:
            break
    output.mkdir(parents=True, exist_ok=True)
    molsym.save(model, output / "model.pt")
    metrics = {"variant": variant, "epochs": len(log), "epochs_planned": epochs, "train_seconds": log[-1]["seconds"],
               "train_ids": train_ids, "test_ids": test_ids, "loss": weights, "head": head_settings,
               "eigen_k": eigen, "loadavg": os.getloadavg(), **test_metrics(model, test_samples)}
    tmp = output / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    tmp.replace(output / "metrics.json")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=13.0)
    parser.add_argument("--runs", default=str(ROOT / "runs" / "horm"))
    parser.add_argument("--summary", default=None, help="gather runs/horm/*/metrics.json into this JSON")
    args = parser.parse_args()
    if args.summary:
        rows = {}
        for path in sorted(Path(args.runs).glob("*/metrics.json")):
            row = json.loads(path.read_text())
            rows[row["variant"]] = {k: v for k, v in row.items() if k not in ("train_ids",)}
        Path(args.summary).write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps(rows, indent=1))
        return
    if args.variant is None:
        parser.error("--variant or --summary is required")
    print(json.dumps(train(args.variant, args.epochs, args.minutes, Path(args.runs) / args.variant), indent=1))


if __name__ == "__main__":
    main()
