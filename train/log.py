"""Run logs on rank 0: ``log.csv`` always (one row per epoch), TensorBoard events when installed."""
from __future__ import annotations

import csv
import io
import math
import os
import secrets
from pathlib import Path


def write_csv(history: list[dict], path: Path) -> None:
    """Rewrite ``path`` from the whole history, atomically (a resumed run never duplicates rows).

    Columns: the union of every row's keys, in first-seen order; blank where a row lacks one.
    """
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: _cell(value) for key, value in row.items()})
    _atomic_text(buffer.getvalue(), Path(path))


def write_json(content, path: Path) -> None:
    """``json.dump`` to ``path`` atomically."""
    import json

    _atomic_text(json.dumps(content, indent=2, sort_keys=True) + "\n", Path(path))


def _atomic_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with open(tmp, "w", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _cell(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def read_csv(path: Path) -> list[dict]:
    """Rows of a ``log.csv`` with numbers parsed (blank cells dropped)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({key: float(value) if key != "epoch" else int(value) for key, value in row.items() if value != ""})
    return rows


class TensorBoard:
    """Scalars per epoch under ``{output}/tensorboard``; inert when disabled or TensorBoard is missing."""

    def __init__(self, directory: Path, mode):
        self.writer = None
        if mode is False:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            if mode is True:
                raise RuntimeError("tensorboard: true, but the tensorboard package is not installed "
                                   "(pip install tensorboard, or set tensorboard: auto)") from None
            return
        self.writer = SummaryWriter(log_dir=str(directory))

    def add(self, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key.replace("_", "/", 1), value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
