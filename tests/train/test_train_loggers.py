"""Per-epoch loggers: a CSV file always (columns grow with the records), TensorBoard if installed."""

from __future__ import annotations

import csv

import pytest

from deltarnn.train import CSVLogger, TensorBoardLogger, default_loggers


def test_csv_logger_keeps_every_column_and_replaces_a_rewritten_epoch(tmp_path):
    log = CSVLogger(tmp_path / "m.csv")
    log.log({"epoch": 1, "train_loss": 0.5})
    log.log({"epoch": 2, "train_loss": 0.4, "val_accuracy": 0.8})
    log.log({"epoch": 2, "train_loss": 0.3, "val_accuracy": 0.9})  # a resumed epoch again
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["val_accuracy"] == "" and rows[1]["val_accuracy"] == "0.9"


def test_default_loggers_always_write_csv(tmp_path):
    loggers = default_loggers(tmp_path)
    assert isinstance(loggers[0], CSVLogger) and loggers[0].path == tmp_path / "metrics.csv"


def test_tensorboard_logger_writes_scalars_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path / "tb")
    logger.log({"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.9, "note": "text"})
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
