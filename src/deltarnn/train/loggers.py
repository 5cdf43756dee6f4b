"""Per-epoch loggers for :func:`~deltarnn.train.fit`: a CSV file always, TensorBoard if installed."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class CSVLogger:
    """Appends one row per epoch to a CSV file; the header grows when a record brings new keys
    (the file is rewritten then), so every row keeps every column it had."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def log(self, record: Mapping[str, Any]) -> None:
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        rows = [r for r in rows if str(r.get("epoch")) != str(record.get("epoch"))]
        rows.append({k: v for k, v in record.items() if _scalar(v)})
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


class TensorBoardLogger:
    """Writes every number of an epoch's record as a TensorBoard scalar (step = epoch)."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def log(self, record: Mapping[str, Any]) -> None:
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and _scalar(value) and not isinstance(value, str):
                self.writer.add_scalar(key, float(value), epoch)
        self.writer.flush()


def default_loggers(run_dir: str | Path) -> list[CSVLogger | TensorBoardLogger]:
    """``metrics.csv`` in the run folder, and ``tensorboard/`` when tensorboard is installed."""
    run_dir = Path(run_dir)
    loggers: list[CSVLogger | TensorBoardLogger] = [CSVLogger(run_dir / "metrics.csv")]
    try:
        loggers.append(TensorBoardLogger(run_dir / "tensorboard"))
    except ImportError:
        log.debug("tensorboard is not installed: no TensorBoard log")
    return loggers


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, int | float | str | bool)
