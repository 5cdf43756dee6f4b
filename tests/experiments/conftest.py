"""The experiment scripts live outside the package (``experiments/<name>/``): load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

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
