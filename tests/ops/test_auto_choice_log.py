"""backend='auto' says once which backend it chose, and warns when a missing extra slows it."""

from __future__ import annotations

import logging

import pytest
import torch

import deltarnn
from deltarnn.ops import choice_log, load_backend


@pytest.fixture
def fresh_log(monkeypatch):
    monkeypatch.setattr(choice_log, "_logged", set())


def run_twice(module, x):
    with torch.no_grad():
        module(x)
        module(x)


def test_without_numba_auto_warns_once_what_to_install(fresh_log, monkeypatch, caplog):
    # A plain install: the cpu backend's numba is missing.
    import deltarnn.ops as ops

    real_load = ops.load_backend
    monkeypatch.setattr(ops, "load_backend", lambda n: None if n == "cpu" else real_load(n))
    real_missing = choice_log.missing_dependency
    monkeypatch.setattr(
        choice_log, "missing_dependency", lambda n: "numba" if n == "cpu" else real_missing(n)
    )
    gru = deltarnn.DeltaGRU(3, 4)
    with caplog.at_level(logging.INFO, logger="deltarnn.ops"):
        run_twice(gru, torch.randn(5, 1, 3))
    records = [r for r in caplog.records if "backend='auto'" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert f"runs {gru.last_backend!r} for cpu float32" in message
    assert "cpu needs numba (pip install 'deltarnn[cpu]')" in message


@pytest.mark.skipif(load_backend("cpu") is None, reason="numba is not installed")
def test_with_numba_the_choice_is_logged_once_at_info(fresh_log, caplog):
    gru = deltarnn.DeltaGRU(3, 4)
    with caplog.at_level(logging.INFO, logger="deltarnn.ops"):
        run_twice(gru, torch.randn(5, 1, 3))
        gru(torch.randn(5, 1, 3))  # with gradients: another kind of call
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == [logging.INFO, logging.INFO]
    assert messages[0][1].startswith("backend='auto' runs 'cpu' for cpu float32")
    assert messages[1][1].startswith("backend='auto' runs 'fused' for cpu float32 with gradients")
    assert "cpu does not support this call" in messages[1][1]
