"""Shared fixtures and markers: ``slow`` tests run with --runslow; ``gpu`` tests need CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root with real data sets ($DELTARNN_DATA, else ../shared/data); skip if absent."""
    root = Path(os.environ.get("DELTARNN_DATA", REPO.parent / "shared" / "data"))
    if not (root / "fsdd" / "recordings").is_dir():
        pytest.skip(f"no FSDD recordings under {root} (set DELTARNN_DATA)")
    return root


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")
