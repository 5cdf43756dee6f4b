"""Running test files in a fresh process where Triton interprets its kernels.

Triton picks the interpreter or the compiler when it is imported, so the suite's own process
(which imports it compiled, or without a GPU skips its cases) hands the interpreted cases to a
subprocess with ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_interpreted(*pytest_args: str, timeout: float) -> str:
    """Run ``pytest -q <pytest_args>`` from the repository root under the interpreter; assert
    it passed and return its summary line (the last line of its output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout.splitlines()[-1]
