"""Diagnostic figures of a training run: parity plots and learning curves, written as PNG.

matplotlib is imported inside the functions, so ``import molsym.train`` does
not import it. Figures are drawn with the Agg canvas directly (no pyplot, no
display, no change to the user's matplotlib backend or global state). Every figure is rendered to a
temporary file beside the target (``.<name>.<random>.tmp.png``) and moved onto
it with :func:`os.replace`, so a reader never sees a half-written PNG and an
interrupted run leaves no partial file.

Units are those of the values given: a parity plot of energies per atom in
eV/atom states its MAE and RMSE in eV/atom. The learning curve reads the
metric columns by name (``*_energy_rmse_mev_atom`` in meV/atom,
``*_forces_rmse_mev_a`` in meV/Å).
"""
from __future__ import annotations

import math
import os
import secrets
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

HEXBIN_ABOVE = 20_000  # points; larger parity sets are drawn as a 2-D histogram
SPLITS = ("train", "valid", "test")
SPLIT_COLOURS = {"train": "tab:blue", "valid": "tab:orange", "test": "tab:green"}


def parity_plot(reference, predicted, path, *, quantity: str, unit: str, title: str | None = None) -> Path:
    """Scatter of predicted against reference values with the y = x line; returns the PNG path.

    Args:
        reference: (M,) array-like of reference values, in ``unit`` (for
            example energies per atom in eV/atom, or every force component in eV/Å).
        predicted: (M,) array-like of predictions, same unit and order.
        path: target PNG file; parent directories are created.
        quantity: what the values are ("energy per atom", "force component"),
            used in the axis labels "reference {quantity} ({unit})" and
            "predicted {quantity} ({unit})".
        unit: the values' unit, used in the labels and the MAE/RMSE text.
        title: optional figure title.

    Both axes share the same limits. An inset states N, MAE and RMSE (4
    significant digits, in ``unit``). Above ``HEXBIN_ABOVE`` points the
    scatter becomes a hexagonal 2-D histogram with a logarithmic colour
    scale, which stays fast for 10^6 points.

    Raises:
        ValueError: lengths differ, input is empty or not 1-D, or a value is NaN or infinite.
    """
    reference = _as_1d(reference, "reference")
    predicted = _as_1d(predicted, "predicted")
    if reference.shape != predicted.shape:
        raise ValueError(f"parity_plot: reference has {reference.size} values but predicted has {predicted.size}")
    if reference.size == 0:
        raise ValueError("parity_plot: reference and predicted are empty")
    for name, values in (("reference", reference), ("predicted", predicted)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"parity_plot: {name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), "
                f"first at index {int(np.flatnonzero(bad)[0])}"
            )

    error = predicted - reference
    mae = float(np.mean(np.abs(error)))
    rmse = float(np.sqrt(np.mean(error**2)))
    low = float(min(reference.min(), predicted.min()))
    high = float(max(reference.max(), predicted.max()))
    pad = 0.03 * (high - low) if high > low else max(abs(high), 1.0) * 0.05
    limits = (low - pad, high + pad)

    from matplotlib.colors import LogNorm

    figure = _figure(figsize=(5.0, 5.0))
    axes = figure.subplots()
    if reference.size > HEXBIN_ABOVE:
        cells = axes.hexbin(reference, predicted, gridsize=150, extent=(*limits, *limits), mincnt=1,
                            norm=LogNorm(), cmap="viridis", linewidths=0.0)
        figure.colorbar(cells, ax=axes, label="count", shrink=0.8)
    else:
        size = 12.0 if reference.size < 1_000 else 4.0
        axes.scatter(reference, predicted, s=size, alpha=0.6, edgecolors="none", color="tab:blue")
    axes.plot(limits, limits, color="black", linewidth=0.8, linestyle="--", zorder=3)
    axes.set_xlim(limits)
    axes.set_ylim(limits)
    axes.set_aspect("equal", adjustable="box")
    axes.set_xlabel(f"reference {quantity} ({unit})")
    axes.set_ylabel(f"predicted {quantity} ({unit})")
    text = f"N = {reference.size}\nMAE = {mae:.4g} {unit}\nRMSE = {rmse:.4g} {unit}"
    axes.text(0.04, 0.96, text, transform=axes.transAxes, va="top", ha="left", fontsize=9,
              bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"})
    if title:
        axes.set_title(title)
    return _save(figure, path)


def learning_curve(history: Sequence[Mapping[str, Any]], path, *, title: str | None = None) -> Path:
    """Losses, energy RMSE and forces RMSE per split against epoch; returns the PNG path.

    Args:
        history: one dict per epoch, with any of the keys ``epoch`` (default:
            the row number, from 1), ``lr``, ``{split}_loss``,
            ``{split}_energy_rmse_mev_atom`` (meV/atom) and
            ``{split}_forces_rmse_mev_a`` (meV/Å), ``split`` in train, valid,
            test. A value that is missing, None or NaN in some rows is skipped
            in those rows; other keys are ignored.
        path: target PNG file; parent directories are created.
        title: optional figure title.

    Panels: losses (log y, learning rate on a twin log axis when present),
    then energy RMSE and forces RMSE when any row has them. Curves are
    drawn on a log y axis when all their values are positive.

    Raises:
        ValueError: ``history`` is empty.
    """
    rows = list(history)
    if not rows:
        raise ValueError("learning_curve: history is empty (no epochs to plot)")
    epochs = np.array([_number(row.get("epoch", index + 1)) for index, row in enumerate(rows)], dtype=float)
    epochs = np.where(np.isfinite(epochs), epochs, np.arange(1, len(rows) + 1, dtype=float))

    def column(key: str) -> np.ndarray:
        return np.array([_number(row.get(key)) for row in rows], dtype=float)

    def present(key: str) -> bool:
        return bool(np.isfinite(column(key)).any())

    panels = [("loss", "{}_loss")]
    if any(present(f"{split}_energy_rmse_mev_atom") for split in SPLITS):
        panels.append(("energy RMSE (meV/atom)", "{}_energy_rmse_mev_atom"))
    if any(present(f"{split}_forces_rmse_mev_a") for split in SPLITS):
        panels.append(("forces RMSE (meV/Å)", "{}_forces_rmse_mev_a"))

    figure = _figure(figsize=(6.5, 2.6 * len(panels) + 0.6))
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (label, pattern) in zip(axes_list, panels):
        drawn = False
        for split in SPLITS:
            values = column(pattern.format(split))
            keep = np.isfinite(values)
            if keep.any():
                axes.plot(epochs[keep], values[keep], marker="o" if keep.sum() < 30 else None, markersize=3,
                          color=SPLIT_COLOURS[split], label=split)
                drawn = True
        _log_if_positive(axes, [line.get_ydata() for line in axes.get_lines()])
        axes.set_ylabel(label)
        axes.grid(True, which="major", alpha=0.3)
        if not drawn:
            axes.text(0.5, 0.5, "no loss values", transform=axes.transAxes, ha="center", va="center",
                      color="0.5")
    lr = column("lr")
    keep = np.isfinite(lr)
    handles, labels = axes_list[0].get_legend_handles_labels()
    if keep.any():
        twin = axes_list[0].twinx()
        (line,) = twin.plot(epochs[keep], lr[keep], color="0.4", linestyle=":", linewidth=1.2, label="lr")
        _log_if_positive(twin, [lr[keep]])
        twin.set_ylabel("learning rate")
        handles.append(line)
        labels.append("lr")
    if handles:
        axes_list[0].legend(handles, labels, fontsize=8, loc="upper right")
    for axes in axes_list[1:]:
        if axes.get_lines():
            axes.legend(fontsize=8, loc="upper right")
    axes_list[-1].set_xlabel("epoch")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def error_against_time(runs: Mapping[str, Sequence[Mapping[str, Any]]], path, *, split: str = "valid",
                       title: str | None = None) -> Path:
    """Forces and energy RMSE of ``split`` against training time, one curve per run; returns the PNG path.

    Args:
        runs: label -> history (the rows of a run's ``log.csv``: ``time_s``, the training clock in
            seconds, and ``{split}_forces_rmse_mev_a`` (meV/Å), ``{split}_energy_rmse_mev_atom``
            (meV/atom)). Rows without a finite time or value are skipped.
        path: target PNG file; parent directories are created.
        split: which metrics to draw (train, valid or test).

    Both axes are logarithmic (time in minutes), so runs of different lengths and speeds compare
    at equal wall time.

    Raises:
        ValueError: no runs, an unknown split, or a run without any finite point.
    """
    if split not in SPLITS:
        raise ValueError(f"error_against_time: split must be one of {SPLITS}, got {split!r}")
    if not runs:
        raise ValueError("error_against_time: no runs given")
    figure = _figure(figsize=(6.5, 6.0))
    axes_f, axes_e = figure.subplots(2, 1, sharex=True)
    for label, history in runs.items():
        rows = list(history)
        minutes = np.array([_number(row.get("time_s")) for row in rows], dtype=float) / 60.0
        drawn = False
        for axes, key in ((axes_f, f"{split}_forces_rmse_mev_a"), (axes_e, f"{split}_energy_rmse_mev_atom")):
            values = np.array([_number(row.get(key)) for row in rows], dtype=float)
            keep = np.isfinite(minutes) & np.isfinite(values) & (minutes > 0) & (values > 0)
            if keep.any():
                axes.plot(minutes[keep], values[keep], label=label)
                drawn = True
        if not drawn:
            raise ValueError(f"error_against_time: run {label!r} has no finite time_s and {split} RMSE values")
    for axes, unit in ((axes_f, f"{split} forces RMSE (meV/Å)"), (axes_e, f"{split} energy RMSE (meV/atom)")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_ylabel(unit)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8, loc="upper right")
    axes_e.set_xlabel("training time (minutes)")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def _figure(figsize) -> Any:
    """A ``matplotlib.figure.Figure`` attached to an Agg canvas (freed with the object; no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path) -> Path:
    """Render ``figure`` to a temporary PNG beside ``path`` and move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp.png"
    # O_EXCL: never reuse an existing file; mode 0666 minus the umask, as an ordinary new file
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png", dpi=120, bbox_inches="tight")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def _as_1d(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensors, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"parity_plot: {name} must be 1-D, got shape {tuple(array.shape)} (flatten it first)")
    return array


def _number(value) -> float:
    """``value`` as a float; NaN for None, missing or non-numeric values."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _log_if_positive(axes, series) -> None:
    values = [np.asarray(s, dtype=float) for s in series if len(s)]
    if values and all((v > 0).all() for v in values):
        axes.set_yscale("log")
