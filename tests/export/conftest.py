"""Fixtures of the C export tests: a C compiler (skip with the reason when none can be had) and
frames of a real FSDD recording on a binary grid."""

from __future__ import annotations

import shutil

import pytest
import torch
from tests.export.helpers import GRID

from deltarnn.export import find_compiler


@pytest.fixture(scope="session")
def cc() -> str:
    compiler = find_compiler()
    if compiler is None:
        pytest.skip(
            "no C compiler (cc, gcc, clang or $CC) on this machine: install gcc "
            "(.ci/run does it with apt-get)"
        )
    return compiler


@pytest.fixture(scope="session")
def binutils() -> None:
    """``nm`` and ``size`` (binutils, installed with gcc)."""
    missing = [tool for tool in ("nm", "size") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"no {' or '.join(missing)} on this machine (binutils)")


@pytest.fixture(scope="session")
def fsdd_frames(data_root) -> torch.Tensor:
    """(T, 40) float32: log-mel frames of three FSDD recordings, each band standardised, on the
    grid k/16."""
    from deltarnn.bench import fsdd_log_mel

    x = fsdd_log_mel(data_root, files=3)[:, 0]
    return torch.round(x * GRID) / GRID
