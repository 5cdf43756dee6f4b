"""Command-line conventions: one-line errors with exit 2, defaults in --help, a fast top-level
--help, clean machine output on stdout, --model, per-layer Θ in eval, --download."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deltarnn.cli import options
from deltarnn.cli.main import main

BAD_CALLS = [
    ["cost", "--theta-x", "-1", "--steps", "5"],
    ["cost", "--input", "missing.npy"],
    ["eval", "missing/"],
    ["bench", "--occupancy", "1.5", "--hidden", "8", "--steps", "2"],
    ["train", "--set", "model.hiden_size=32", "--out", "unused"],
]


@pytest.mark.parametrize("argv", BAD_CALLS, ids=lambda a: " ".join(a[:3]))
def test_errors_print_one_line_and_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    first, hint = captured.err.strip().splitlines()[-2:]
    assert first.startswith(f"deltarnn {argv[0]}: error: ")
    assert hint == "(run with -v for the traceback)"
    assert captured.out == ""


def test_verbose_adds_the_traceback(capsys):
    assert main(["cost", "--theta-x", "-1", "--steps", "5", "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ThresholdError" in err


def test_top_level_help_does_not_import_torch():
    code = (
        "import sys\nfrom deltarnn.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "cost " in out and "train " in out  # the commands are listed
    assert out.strip().endswith("False")


def test_help_shows_defaults_and_train_lists_config_keys(capsys):
    with pytest.raises(SystemExit):
        main(["cost", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--steps STEPS T of the generated input (default: 200)" in text
    assert (
        "--signal {random-walk,sines,noise} generated input when no --input (default: random-walk)"
        in text
    )
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "\n  model.hidden_size = 64\n" in out and "\n  method.delta = false\n" in out


def test_cost_json_is_the_only_stdout_and_has_no_parser_internals(capsys):
    argv = ["cost", "--hidden-size", "8", "--input-size", "3", "--steps", "6", "--layers", "2"]
    assert main([*argv, "--theta-x", "0.1,0.2", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # the whole of stdout is one JSON document
    assert report["config"] == {
        "kind": "gru",
        "input_size": 3,
        "hidden_size": 8,
        "layers": 2,
        "theta_x": [0.1, 0.2],
        "theta_h": [0.1, 0.1],
        "weights": "random (seed 0)",
        "input": "random-walk (seed 0)",
        "steps": 6,
        "batch": 1,
    }


def test_cost_table_on_stdout_prose_on_stderr(capsys):
    assert main(["cost", "--hidden-size", "8", "--input-size", "3", "--steps", "6"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split()[:3] == ["layer", "kind", "I"]
    assert "delta GRU: I=3 H=8 layers=1 T=6 B=1" in captured.err


def test_thresholds_option_parses_one_or_one_per_layer():
    assert options.thresholds("0.25") == 0.25
    assert options.thresholds("0.1,0.2") == [0.1, 0.2]
    with pytest.raises(Exception, match="one per layer"):
        options.thresholds("0.1,x")


def test_download_flag_fetches_before_the_command_runs(tmp_path, monkeypatch, capsys):
    fetched = []
    monkeypatch.setattr(options, "fetch_fsdd", lambda root=None: fetched.append(root))
    import deltarnn.cli.demo as demo

    monkeypatch.setattr(demo, "fetch_fsdd", options.fetch_fsdd)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"root": str(tmp_path / "data")}}))
    import deltarnn.cli.eval as eval_cli

    monkeypatch.setattr(eval_cli, "fetch_fsdd", options.fetch_fsdd)
    # the fetch happens, then the (fake) run folder fails to load: exit 2, after fetching
    assert main(["eval", str(run), "--download"]) == 2
    assert fetched == [str(tmp_path / "data")]


def test_missing_data_message_names_the_download_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DELTARNN_DATA", str(tmp_path / "nothing"))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "FSDD not found at" in err and "`deltarnn demo --download` fetches it" in err


@pytest.fixture(scope="module")
def no_tqdm_thread():
    """tqdm starts a monitor thread even for disabled bars; a live thread allocates now and
    then and would show in the allocation tests of later modules."""
    tqdm = pytest.importorskip("tqdm").tqdm
    interval, tqdm.monitor_interval = tqdm.monitor_interval, 0
    yield
    tqdm.monitor_interval = interval


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, no_tqdm_thread):
    from deltarnn.data import DataNotFoundError, list_recordings

    try:
        list_recordings()
    except DataNotFoundError:
        pytest.skip("FSDD not found (set DELTARNN_DATA)")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("cli") / "run"
    tiny = [
        "--set", "model.hidden_size=8", "--set", "model.num_layers=2",
        "--set", "model.theta_x=0.05", "--set", 'data.split="take"',
        "--set", "data.limit_train=32", "--set", "data.limit_test=16", "--epochs", "1",
    ]  # fmt: skip
    assert main(["train", *tiny, "--out", str(run), "--quiet"]) == 0
    yield run
    torch.set_num_threads(threads)


def test_cost_of_a_trained_run_keeps_its_thresholds(tiny_run, capsys):
    capsys.readouterr()
    assert main(["cost", "--model", str(tiny_run), "--steps", "20", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["weights"] == str(tiny_run)
    assert (config["input_size"], config["hidden_size"], config["layers"]) == (40, 8, 2)
    assert config["theta_x"] == [0.05, 0.05] and config["theta_h"] == [0.0, 0.0]
    assert main(["cost", "--model", str(tiny_run), "--hidden-size", "16"]) == 2
    assert "--hidden-size cannot be combined with --model" in capsys.readouterr().err


def test_eval_takes_one_threshold_per_layer(tiny_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    argv = ["eval", str(tiny_run), "--theta-x", "0,100", "--theta-h", "0", "--json", str(out)]
    assert main(argv) == 0
    layers = json.loads(out.read_text())["cost"]["layers"]
    assert layers[0]["occupancy_x"] > 0.5 and layers[1]["sent_x"] == 0  # Θx = 100 on layer 1
    summary = json.loads(capsys.readouterr().out)  # stdout: the JSON summary alone
    assert set(summary) >= {"metric", "value", "mac_reduction"}


def test_a_missing_audio_file_is_a_data_not_found_error(tmp_path):
    from deltarnn.data import DataNotFoundError, load_audio

    with pytest.raises(DataNotFoundError, match="DELTARNN_DATA"):
        load_audio(tmp_path / "7_jackson_0.wav")
