"""Settings of the fuzz tier (hypothesis): bounded, deterministic examples by default.

Profiles (choose with ``pytest --hypothesis-profile=NAME`` or ``DELTARNN_FUZZ_PROFILE=NAME``):

* ``ci`` (default): few examples, derandomized (the same cases on every run, so a failure
  reproduces and ``make test`` cannot flake), a per-example deadline that only stops a hang, no
  example database. The whole tier stays under a minute on two cores.
* ``thorough``: random seeds and many more examples, for a long local hunt; a failure prints the
  ``@reproduce_failure`` blob to paste into the test.

Every test under ``tests/fuzz`` is marked ``fuzz`` (``pytest -m fuzz`` runs the tier alone).
Tests that need another budget than the profile's use ``@settings(max_examples=...)`` on top.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

FUZZ_DIR = Path(__file__).resolve().parent

# Both profiles print the blob that reproduces a failure; a slow draw is the shared machine's load.
_COMMON = {"print_blob": True, "suppress_health_check": [HealthCheck.too_slow]}
# ci: the deadline only stops a hang (the machine running the suite may be heavily shared).
settings.register_profile(
    "ci",
    max_examples=10,
    deadline=timedelta(seconds=60),
    derandomize=True,
    database=None,
    **_COMMON,
)
settings.register_profile("thorough", max_examples=500, deadline=timedelta(seconds=30), **_COMMON)


@pytest.fixture(scope="session", autouse=True)
def compiled_backends():
    """Run every backend once before the examples, so JIT compilation (numba, on a clean
    checkout) is not charged to an example's deadline."""
    import torch

    import deltarnn
    from deltarnn.ops import available_backends, load_backend

    cpu = torch.device("cpu")
    for cls in (deltarnn.DeltaGRU, deltarnn.DeltaLSTM):
        for dtype in (torch.float32, torch.float64):
            model = cls(2, 3, dtype=dtype)
            for name in available_backends():
                if load_backend(name).supports(cpu, dtype, needs_grad=False):
                    model.backend = name
                    with torch.no_grad():
                        model(torch.zeros(2, 1, 2, dtype=dtype))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: property-based tests of tests/fuzz (hypothesis)")
    # An explicit --hypothesis-profile wins; otherwise the environment, otherwise "ci".
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile(os.environ.get("DELTARNN_FUZZ_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if FUZZ_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.fuzz)
