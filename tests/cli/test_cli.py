"""The deltarnn command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import deltarnn
from deltarnn.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert deltarnn.__version__ in capsys.readouterr().out


def test_cost_json_generated_input(capsys):
    assert (
        main(["cost", "--hidden-size", "32", "--input-size", "8", "--steps", "40", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["hidden_size"] == 32
    layer = report["layers"][0]
    assert layer["dense_macs"] == 3 * 32 * (8 + 32) * 40
    assert 0 < layer["occupancy_x"] < 1


def test_cost_table_from_npy(tmp_path, capsys):
    path = tmp_path / "signal.npy"
    np.save(
        path,
        np.cumsum(np.random.default_rng(0).normal(size=(30, 6)) * 0.05, axis=0).astype("float32"),
    )
    assert (
        main(
            ["cost", "--input", str(path), "--hidden-size", "16", "--kind", "lstm", "--layers", "2"]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "delta LSTM: I=6 H=16 layers=2 T=30 B=1" in captured.err
    assert "all" in captured.out


def test_cost_rejects_bad_input_file(tmp_path, capsys):
    path = tmp_path / "signal.txt"
    path.write_text("1 2 3")
    assert main(["cost", "--input", str(path)]) == 2
    assert "--input must be a .npy or .safetensors file" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "deltarnn", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"deltarnn {deltarnn.__version__}"


def test_bench_subcommand_prints_one_table_with_the_baselines(capsys):
    argv = ["bench", "--hidden", "16", "--occupancy", "0.5", "--steps", "4", "--repeats", "1"]
    argv += [
        "--warmup",
        "0",
        "--prefix",
        "2",
        "--methods",
        "torch_gru",
        "torch_grucell",
        "reference",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for method in ("torch_gru", "torch_grucell", "reference"):
        assert f"| {method} |" in out
