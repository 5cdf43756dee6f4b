"""``deltarnn train`` / ``eval`` / ``sweep``: argument parsing and a tiny end-to-end run."""

import json

import pytest

from deltarnn.cli.main import build_parser, main
from deltarnn.cli.train import config_from_args
from deltarnn.errors import ConfigError


def test_train_flags_build_the_config(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model": {"hidden_size": 48}, "epochs": 7}))
    args = build_parser().parse_args(
        [
            "train",
            "--config",
            str(tmp_path / "c.json"),
            "--set",
            "method.delta=true",
            "--set",
            "model.theta_h=[0.1, 0.2]",
            "--set",
            "model.num_layers=2",
            "--seed",
            "4",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    cfg = config_from_args(args)
    assert cfg.model.hidden_size == 48 and cfg.epochs == 7 and cfg.seed == 4
    assert cfg.method.delta is True and cfg.model.theta_h == [0.1, 0.2]


def test_bad_override_is_a_config_error(tmp_path):
    args = build_parser().parse_args(["train", "--set", "model.nope=1", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="model.nope"):
        config_from_args(args)


def test_subcommands_are_registered():
    parser = build_parser()
    for argv in (["eval", "runs/x", "--theta", "0.2"], ["sweep", "s.json", "--render-only"]):
        assert parser.parse_args(argv).command == argv[0]
    with pytest.raises(SystemExit):
        parser.parse_args(["train"])  # --out is required


def test_train_eval_sweep_end_to_end(tmp_path, fsdd, capsys):
    tiny = [
        "--set", "model.hidden_size=8", "--set", "model.num_layers=1",
        "--set", 'data.split="take"', "--set", "data.limit_train=64",
        "--set", "data.limit_test=32", "--set", "data.batch_size=16", "--epochs", "1",
    ]  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", *tiny, "--out", str(run), "--quiet", "--threads", "1"]) == 0
    for name in ("config.json", "model.safetensors", "metrics.json", "ckpt-000001/optimizer.json"):
        assert (run / name).exists(), name
    assert main(["eval", str(run), "--theta", "0.3", "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["cost"]["total"]["mac_reduction"] > 1.5  # Θ = 0.3 skips work
    sweep = {
        "base": {
            "model": {"hidden_size": 8, "num_layers": 1},
            "data": {"limit_train": 64, "limit_test": 32, "batch_size": 16},
        },
        "splits": ["take"],
        "seeds": [0],
        "thetas": [0.3],
        "methods": {
            "dense": {"kind": "dense", "epochs": 1},
            "converted": {"kind": "converted"},
            "delta": {"kind": "per_theta", "epochs": 1, "method": {"delta": True}},
        },
        "runs_dir": str(tmp_path / "runs"),
        "results": str(tmp_path / "out/results.json"),
    }
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    assert main(["sweep", str(tmp_path / "sweep.json"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "out/results.json").read_text())
    assert sorted((r["method"], r["theta_x"]) for r in rows) == [
        ("converted", 0.3),
        ("delta", 0.3),
        ("dense", 0.0),
    ]
    for r in rows:
        assert set(r) >= {"task", "split", "seed", "metric", "value", "dense_value"}
        assert set(r) >= {"mac_reduction", "byte_reduction", "occupancy_x", "occupancy_h"}
    assert (tmp_path / "out/table.md").read_text().count("| delta |") == 1
    assert (tmp_path / "out/plot.png").stat().st_size > 1000
    # a second run finds everything done and only redraws
    assert main(["sweep", str(tmp_path / "sweep.json"), "--quiet"]) == 0
    assert len(json.loads((tmp_path / "out/results.json").read_text())) == 3
