"""The wheel carries the license, the typing marker and the metadata an index shows."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_has_license_py_typed_and_metadata(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + [str(REPO), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("deltarnn-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = Parser().parsestr(
            z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        )
        license_file = next(n for n in names if n.endswith("licenses/LICENSE"))
        assert z.read(license_file).decode().startswith("MIT License")
    assert "deltarnn/py.typed" in names
    assert metadata["License-Expression"] == "MIT"
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert metadata.get_all("Project-URL")


def test_every_public_name_resolves_and_is_listed():
    import deltarnn

    assert set(deltarnn.__all__) == {*deltarnn._EXPORTS, *deltarnn._SUBMODULES, "__version__"}
    for name in deltarnn.__all__:
        assert getattr(deltarnn, name) is not None
    assert deltarnn.DeltaGRU.__module__ == "deltarnn.nn.rnn"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        deltarnn.nope  # noqa: B018
