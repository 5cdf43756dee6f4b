"""Each backend module imports on its own, whichever is imported first."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["deltarnn.ops.cpu_stream", "deltarnn.ops.cpu"])
def test_cpu_modules_import_first(module):
    code = f"import {module}; import deltarnn.ops.cpu as c; print(c.StackStreamer.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "StackStreamer"
