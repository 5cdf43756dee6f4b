"""The experiment scripts live outside the package (``experiments/<name>/``): load them by path."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from deltarnn.train import read_rows

REPO = Path(__file__).resolve().parents[2]


def _load(relative: str, name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def speech():
    """``experiments/wsj-like/speech.py``."""
    return _load("experiments/wsj-like/speech.py", "experiment_wsj_like_speech")


@pytest.fixture(scope="session")
def strings():
    """``experiments/wsj-like/strings.py``."""
    return _load("experiments/wsj-like/strings.py", "experiment_wsj_like_strings")


@pytest.fixture(scope="session")
def fsdd_loso():
    """``experiments/fsdd/fsdd.py``."""
    return _load("experiments/fsdd/fsdd.py", "experiment_fsdd")


@pytest.fixture(scope="session")
def steering():
    """``experiments/steering/steering.py``."""
    return _load("experiments/steering/steering.py", "experiment_steering")


# The smallest training every experiment test runs: one epoch per stage, eight units.
TINY = {"hidden_size": 8, "batch_size": 4, "dense_epochs": 1, "retrain_epochs": 1}


@pytest.fixture
def tiny():
    """Config fields of a tiny run, shared by the experiment scripts."""
    return dict(TINY)


VAL_METHODS = {"dense", "converted", "control", "delta", "delta_l1", "learnable"}
SUMMARY_KEYS = ("claim", "target", "budget", "metric", "dense_test", "selected", "test", "met")


def _protocol_outputs(results: Path):
    """Check what a protocol script wrote beside ``results``: every candidate on validation, the
    choice made there, summary.json's fields. Returns ``(rows, val rows, test rows, chosen)``
    with chosen the selected ``(method, theta_x)``."""
    rows = read_rows(results)
    val = [r for r in rows if r.split.startswith("val:")]
    test = [r for r in rows if r.split.startswith("test:")]
    assert {r.method for r in val} == VAL_METHODS
    selection = json.loads((results.parent / "selection.json").read_text())
    assert selection["chosen_on"] == "validation"
    summary = json.loads((results.parent / "summary.json").read_text())
    for key in SUMMARY_KEYS + ("command",):
        assert key in summary
    assert set(summary["dense_test"]) >= {"mean", "sd", "ci95", "n_seeds"}
    assert summary["selected"]["chosen_on"] == "validation"
    assert set(summary["test"]) >= {"metric", "loss_vs_dense", "mac_reduction", "ops_reduction"}
    assert isinstance(summary["met"], bool)
    assert all("learned_theta_x" in r.extra for r in rows if r.method == "learnable")
    return rows, val, test, (selection["method"], selection["theta_x"])


@pytest.fixture
def protocol_outputs():
    """The checks every validation-protocol script's outputs pass (see ``_protocol_outputs``)."""
    return _protocol_outputs
