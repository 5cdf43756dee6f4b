"""The tutorial script runs end to end (small sizes) and its swap is exact at Θ = 0."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_tutorial_runs_and_draws_its_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("tutorial", REPO / "examples" / "tutorial.py")
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    result = tutorial.main(
        ["--out", str(tmp_path), "--n", "64", "--train-steps", "5", "--retrain-steps", "2"]
    )
    assert (tmp_path / "tutorial.png").stat().st_size > 1000
    converted = result["converted"]
    # Θ = 0: the converted model is the torch model
    assert converted[0]["theta"] == 0 and converted[0]["accuracy"] == result["dense"]
    assert converted[-1]["mac_reduction"] > converted[0]["mac_reduction"]
    assert "retrained" in capsys.readouterr().out
