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
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Derived files (features, frames) of this test go to a fresh folder, not the user's cache.
    Use with ``pytestmark = pytest.mark.usefixtures("isolated_cache")``."""
    monkeypatch.setenv("DELTARNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _grid_input(steps: int, batch: int, features: int, seed: int) -> torch.Tensor:
    """Values on a k/8 grid that move by whole grid steps: |Δ| is never near a 3/16 threshold."""
    g = torch.Generator().manual_seed(seed)
    moves = torch.randint(-2, 3, (steps, batch, features), generator=g).double() / 8
    moves[torch.rand(steps, batch, features, generator=g) < 0.5] = 0
    return torch.cumsum(moves, dim=0)


@pytest.fixture
def grid_input():
    """``grid_input(steps, batch, features, seed)``: a float64 (T, B, F) input on a k/8 grid
    that moves by whole grid steps, so no |Δ| lies near a threshold at a grid midpoint."""
    return _grid_input


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")
