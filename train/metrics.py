"""Error metrics of a split: MAE and RMSE of energies, forces, stress and Hessian entries, summed over ranks.

Reported names and units (``{split}_`` in front in logs):

=========================  ==========================================
energy_mae_mev / _rmse_    total energy, meV per structure
energy_mae_mev_atom / ...  energy per atom, meV/atom
forces_mae_mev_a / ...     force components (free atoms), meV/Å
stress_mae_mev_a3 / ...    stress components, meV/Å³
hessian_mae_mev_a2 / ...   sampled Hessian entries, meV/Å²
hessian_head_mae_mev_a2    the Hessian head's entries (every entry of each block), meV/Å²
hessian_eigen_mae_mev_a2   the head's residuals H v - lambda v on the reference's lowest eigenpairs, meV/Å²
=========================  ==========================================
"""
from __future__ import annotations

import math

import torch

from molsym.train.distributed import World, all_reduce_sum
from molsym.train.losses import LOSS_TERM, TERMS

UNITS = {
    "energy": ("energy", "mev"),
    "energy_per_atom": ("energy", "mev_atom"),
    "forces": ("forces", "mev_a"),
    "stress": ("stress", "mev_a3"),
    "hessian": ("hessian", "mev_a2"),
    "hessian_head": ("hessian_head", "mev_a2"),
    "hessian_eigen": ("hessian_eigen", "mev_a2"),
}


class MetricSums:
    """Running (count, sum |err|, sum err^2) per target in float64, as one tensor so ranks reduce it in one call."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.values = torch.zeros(len(TERMS), 3, dtype=torch.float64, device=device)

    def add(self, sums: dict) -> None:
        for row, name in enumerate(TERMS):
            if name in sums:
                count, absolute, square = sums[name]
                self.values[row, 0] += count.detach()
                self.values[row, 1] += absolute.detach()
                self.values[row, 2] += square.detach().double()

    def reduced(self, world: World) -> "MetricSums":
        out = MetricSums(self.values.device)
        out.values = all_reduce_sum(self.values.clone(), world)
        return out

    def combined(self, other: "MetricSums") -> "MetricSums":
        """The sums over both sets of structures (metrics of their union)."""
        out = MetricSums(self.values.device)
        out.values = self.values + other.values.to(self.values.device)
        return out

    def state_dict(self) -> torch.Tensor:
        return self.values.detach().cpu().clone()

    def load_state_dict(self, values: torch.Tensor) -> None:
        """Sums saved with fewer terms (an older run: terms are only ever appended) get zero rows."""
        values = values.to(self.values.device, torch.float64)
        if values.shape[0] < len(TERMS):
            values = torch.cat((values, values.new_zeros(len(TERMS) - values.shape[0], 3)))
        self.values = values.clone()

    def metrics(self) -> dict[str, float]:
        """MAE and RMSE in meV-based units for every target seen (see the module table)."""
        out = {}
        for row, name in enumerate(TERMS):
            count, absolute, square = (float(v) for v in self.values[row])
            if count <= 0:
                continue
            quantity, unit = UNITS[name]
            out[f"{quantity}_mae_{unit}"] = 1000.0 * absolute / count
            out[f"{quantity}_rmse_{unit}"] = 1000.0 * math.sqrt(square / count)
        return out

    def loss(self, weights: dict) -> float:
        """The weighted MSE loss of the whole split, from the sums (same definition as the training loss)."""
        total, found = 0.0, False
        for weight_name, term in LOSS_TERM.items():
            row = TERMS.index(term)
            count = float(self.values[row, 0])
            weight = weights.get(weight_name, 0.0)  # an absent term weighs nothing
            if weight > 0 and count > 0:
                total += weight * float(self.values[row, 2]) / count
                found = True
        return total if found else float("nan")


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Metrics of several splits as a text table (one row per split; meV-based units)."""
    columns = [
        ("energy_mae_mev_atom", "E MAE meV/at"), ("energy_rmse_mev_atom", "E RMSE meV/at"),
        ("energy_mae_mev", "E MAE meV"), ("energy_rmse_mev", "E RMSE meV"),
        ("forces_mae_mev_a", "F MAE meV/Å"), ("forces_rmse_mev_a", "F RMSE meV/Å"),
        ("stress_mae_mev_a3", "S MAE meV/Å³"), ("stress_rmse_mev_a3", "S RMSE meV/Å³"),
        ("hessian_mae_mev_a2", "H MAE meV/Å²"), ("hessian_rmse_mev_a2", "H RMSE meV/Å²"),
        ("hessian_head_mae_mev_a2", "H head MAE meV/Å²"), ("hessian_head_rmse_mev_a2", "H head RMSE meV/Å²"),
    ]
    present = [(key, title) for key, title in columns if any(key in m for m in rows.values())]
    header = ["split", *(title for _, title in present)]
    body = [[split, *(f"{m[key]:.3f}" if key in m else "-" for key, _ in present)] for split, m in rows.items()]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in [header, *body]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
