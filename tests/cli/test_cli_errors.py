"""The `deltarnn` command refuses bad arguments and input files with a message naming them (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deltarnn.cli.main import main


def run_cost(capsys, *argv: str) -> str:
    """Run ``deltarnn cost``; it must fail with status 2. Returns stderr."""
    try:
        code = main(["cost", "--hidden-size", "4", *argv])
    except SystemExit as exc:  # argparse refuses its own way, also with status 2
        code = exc.code
    assert code == 2
    return capsys.readouterr().err


@pytest.fixture
def good_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((5, 3), np.float32))
    return path


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_cost_rejects_non_positive_steps(capsys, steps):
    assert f"argument --steps: must be a positive int, got {steps}" in run_cost(
        capsys, "--steps", steps
    )


@pytest.mark.parametrize("option", ["--batch", "--hidden-size", "--layers", "--input-size"])
def test_cost_rejects_non_positive_sizes(capsys, option):
    assert f"argument {option}: must be a positive int, got 0" in run_cost(capsys, option, "0")


def test_cost_key_without_input_is_an_error(capsys):
    assert "--key names a tensor inside a .safetensors --input" in run_cost(capsys, "--key", "x")


def test_cost_key_with_npy_input_is_an_error(capsys, good_npy):
    err = run_cost(capsys, "--input", str(good_npy), "--key", "x")
    assert f"--input {good_npy} is .npy" in err


@pytest.mark.parametrize(
    "array,dtype",
    [
        (np.ones((5, 3), np.complex64), "complex64"),
        (np.array([["a", "b"]] * 5), "<U1"),
        (np.ones((5, 3), bool), "bool"),
    ],
)
def test_cost_rejects_non_real_npy(tmp_path, capsys, array, dtype):
    path = tmp_path / "x.npy"
    np.save(path, array)
    err = run_cost(capsys, "--input", str(path))
    assert f"--input {path} must hold real numbers (int or float), got dtype {dtype}" in err


def test_cost_rejects_unreadable_npy_naming_it(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.array([{}], dtype=object), allow_pickle=True)
    assert f"--input {path} is not a readable .npy array" in run_cost(capsys, "--input", str(path))


def test_cost_rejects_empty_input(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((0, 3), np.float32))
    assert f"--input {path} is empty" in run_cost(capsys, "--input", str(path))


def test_cost_rejects_truncated_safetensors_naming_it(tmp_path, capsys):
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "x.safetensors"
    safetensors.save_file({"x": torch.zeros(5, 3)}, str(path))
    path.write_bytes(path.read_bytes()[:20])
    err = run_cost(capsys, "--input", str(path))
    assert f"--input {path} is not a readable .safetensors file" in err


def test_cost_rejects_complex_safetensors(tmp_path, capsys):
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "x.safetensors"
    safetensors.save_file({"x": torch.zeros(5, 3, dtype=torch.complex64)}, str(path))
    assert "must hold real numbers" in run_cost(capsys, "--input", str(path))


def test_cost_names_a_missing_input(tmp_path, capsys):
    path = tmp_path / "absent.npy"
    assert f"--input {path} does not exist" in run_cost(capsys, "--input", str(path))


def test_cost_rejects_negative_threshold(capsys):
    assert "theta_h must be finite and >= 0, got -0.5" in run_cost(capsys, "--theta-h", "-0.5")


def test_export_c_names_a_truncated_safetensors_file(tmp_path, capsys):
    safetensors = pytest.importorskip("safetensors.torch")
    import deltarnn

    path = tmp_path / "model.safetensors"
    safetensors.save_file(deltarnn.DeltaGRU(3, 4).state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:40])
    assert main(["export-c", str(path), "--out", str(tmp_path / "c")]) == 2
    assert f"{path}: not a readable safetensors file" in capsys.readouterr().err
