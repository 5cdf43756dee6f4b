"""Run folders are complete or refused: one-unit checkpoints, config checks on resume, validated
state, no pickle, every saved run loadable, per-epoch validation in metrics.json."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from deltarnn.errors import ConfigError, RunFolderError
from deltarnn.train import RunFolder, Schedule, TrainConfig, load_weights, train
from deltarnn.train.checkpoint import load_optimizer, save_optimizer, write_manifest


def _config(**overrides) -> TrainConfig:
    d = {
        "model": {"hidden_size": 6, "num_layers": 1},
        "data": {"batch_size": 8},
        "optim": {"lr": 0.01},
        "epochs": 2,
        "seed": 1,
    }
    cfg = TrainConfig.from_dict(d)
    return cfg.with_overrides([f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def _train(cfg, run, data, **kw):
    return train(cfg, run, progress=False, device="cpu", data=data, **kw)


def _same_weights(a, b):
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("clip", [-1.0, float("nan"), float("inf")])
def test_negative_or_non_finite_grad_clip_is_rejected(clip):
    with pytest.raises(ConfigError, match="optim.grad_clip"):
        _config(**{"optim.grad_clip": clip})
    with pytest.raises(ConfigError, match="grad_clip"):
        Schedule(epochs=1, grad_clip=clip)


@pytest.mark.parametrize(
    "override, match",
    [
        ("data.limit_test=-1", "data.limit_test"),
        ("data.limit_train=-5", "data.limit_train"),
        ("model.theta_x=null", "theta_x"),
        ("method.frac_bits=2000", "method.frac_bits"),
        ("method.int_bits=-1", "method.int_bits"),
        ("optim.lr_floor=2", "optim.lr_floor"),
        ('select_epoch="best_val"', "validation split"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
    ],
)
def test_bad_config_values_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig().with_overrides([override])


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, sequence_data):
    cfg, data = _config(), sequence_data()
    _train(cfg, tmp_path / "full", data)
    assert _train(cfg, tmp_path / "part", data, stop_after_epochs=1) == {"interrupted_at_epoch": 1}
    _train(cfg, tmp_path / "part", data)
    assert _same_weights(tmp_path / "full", tmp_path / "part")


def test_checkpoint_is_one_unit_and_an_incomplete_one_is_never_resumed(tmp_path, sequence_data):
    cfg, data = _config(), sequence_data()
    run = tmp_path / "run"
    _train(cfg, tmp_path / "full", data)
    _train(cfg, run, data, stop_after_epochs=1)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt")) == ["ckpt-000001"]
    names = {p.name for p in (run / "ckpt-000001").iterdir()}
    assert names == {
        "MANIFEST.json",
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "state.json",
    }
    # A crash while writing epoch 2: a temporary folder, and a folder without its manifest
    # (written last), both holding other weights. Neither is resumed from.
    for name in (".ckpt-crashed", "ckpt-000002"):
        (run / name).mkdir()
        (run / name / "model.safetensors").write_bytes(b"partial")
    _train(cfg, run, data)
    assert _same_weights(tmp_path / "full", run)
    assert not (run / ".ckpt-crashed").exists()


@pytest.mark.parametrize(
    "file, damage",
    [
        ("model.safetensors", "flip"),
        ("optimizer.safetensors", "truncate"),
        ("optimizer.json", "truncate"),
        ("state.json", "empty"),
        ("MANIFEST.json", "empty"),
    ],
)
def test_corrupt_checkpoint_is_refused_naming_the_file(tmp_path, sequence_data, file, damage):
    cfg, data = _config(), sequence_data()
    run = tmp_path / "run"
    _train(cfg, run, data, stop_after_epochs=1)
    path = run / "ckpt-000001" / file
    raw = path.read_bytes()
    if damage == "flip":
        raw = raw[:-3] + bytes([raw[-3] ^ 0x10]) + raw[-2:]
    path.write_bytes({"flip": raw, "truncate": raw[: len(raw) // 2], "empty": b""}[damage])
    with pytest.raises(RunFolderError, match=file.replace(".", r"\.")):
        _train(cfg, run, data)


def test_state_json_is_validated_even_with_a_matching_manifest(tmp_path, sequence_data):
    cfg, data = _config(), sequence_data()
    run = tmp_path / "run"
    _train(cfg, run, data, stop_after_epochs=1)
    ckpt = run / "ckpt-000001"
    for state, match in (({"epoch": 99, "step": 0, "history": []}, "epoch must be an int in"),
                         ({"epoch": -2, "step": 0, "history": []}, "epoch must be an int in"),
                         ({"epoch": 1, "step": 6, "history": []}, "history must list 1"),
                         ([1, 2], "must be a mapping")):  # fmt: skip
        (ckpt / "state.json").write_text(json.dumps(state))
        files = ["model.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"]
        write_manifest(ckpt, files, cfg.to_dict())
        with pytest.raises(RunFolderError, match=match):
            _train(cfg, run, data)


def test_changed_config_is_refused_unless_force(tmp_path, sequence_data):
    cfg, data = _config(), sequence_data()
    run = tmp_path / "run"
    _train(cfg, run, data, stop_after_epochs=1)
    config_bytes = (run / "config.json").read_bytes()
    other = _config(**{"optim.lr": 0.02, "seed": 4})
    with pytest.raises(RunFolderError, match=r"another config.*optim\.lr: 0\.01 -> 0\.02"):
        _train(other, run, data)
    assert (run / "config.json").read_bytes() == config_bytes
    _train(other, run, data, force=True)  # starts clean: equals a fresh run of the new config
    _train(other, tmp_path / "fresh", data)
    assert _same_weights(run, tmp_path / "fresh")
    assert TrainConfig.load(run / "config.json") == other


def test_finished_run_config_is_never_rewritten(tmp_path, sequence_data):
    cfg, data = _config(), sequence_data()
    run = tmp_path / "run"
    first = _train(cfg, run, data)
    config_bytes = (run / "config.json").read_bytes()
    again = _train(cfg, run, data)  # the same config: nothing to train, the same result
    assert again["value"] == first["value"] and again["history"] == first["history"]
    with pytest.raises(RunFolderError, match="another config"):
        _train(_config(**{"model.hidden_size": 7}), run, data)
    assert (run / "config.json").read_bytes() == config_bytes


def test_no_resume_clears_stale_checkpoints(tmp_path, sequence_data):
    cfg, data = _config(), sequence_data()
    run = tmp_path / "run"
    _train(cfg, run, data, stop_after_epochs=1)
    # stale: a checkpoint whose weights are not this run's start
    weights = load_weights(run / "ckpt-000001" / "model.safetensors")
    _train(cfg, run, data, resume=False, stop_after_epochs=1)
    assert (run / "ckpt-000001").is_dir()
    again = load_weights(run / "ckpt-000001" / "model.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights)  # trained again from scratch
    _train(cfg, tmp_path / "fresh", data)
    _train(cfg, run, data, resume=False)
    assert _same_weights(run, tmp_path / "fresh")


def test_optimizer_state_is_safetensors_and_json_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_optimizer(opt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    assert not list(tmp_path.glob("*.pt"))
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    load_optimizer(fresh, tmp_path)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]), (i, k)
    (tmp_path / "optimizer.safetensors").write_bytes(b"\x08\x00\x00")  # truncated
    with pytest.raises(RunFolderError, match="optimizer.safetensors"):
        load_optimizer(fresh, tmp_path)


def test_optimizer_state_of_another_model_is_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 3)).sum().backward()
    opt.step()
    save_optimizer(opt, tmp_path)
    other = torch.optim.Adam(torch.nn.Linear(4, 2).parameters())
    with pytest.raises(RunFolderError, match="optimizer.json.*shape"):
        load_optimizer(other, tmp_path)


def test_changed_architecture_is_our_error_not_a_size_mismatch(tmp_path, sequence_data):
    data = sequence_data()
    _train(_config(), tmp_path / "dense", data)
    cfg = _config(**{"model.hidden_size": 9, "method.init_from": str(tmp_path / "dense")})
    with pytest.raises(RunFolderError, match=r"model\.safetensors does not fit.*rnn\.weight_ih_l0"):
        _train(cfg, tmp_path / "retrain", data)


def test_metrics_json_keeps_per_epoch_validation_metric_and_occupancy(tmp_path, sequence_data):
    cfg, data = _config(**{"model.theta_x": 0.3, "model.theta_h": 0.1}), sequence_data(val=True)
    metrics = _train(cfg, tmp_path / "run", data)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["history"] == metrics["history"] and len(saved["history"]) == 2
    for record in saved["history"]:
        assert {"epoch", "train_loss", "lr", "val_accuracy", "val_occupancy_x"} <= set(record)
        assert 0 <= record["val_accuracy"] <= 1 and 0 < record["val_occupancy_x"] < 1
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["val_accuracy"]) == saved["history"][1]["val_accuracy"]


def test_best_validation_epoch_is_the_final_model(tmp_path, sequence_data):
    data = sequence_data(val=True)
    cfg = _config(
        **{"epochs": 3, "optim.lr": 0.05, "select_epoch": "best_val", "data.val_speakers": ["v"]}
    )
    metrics = _train(cfg, tmp_path / "run", data)
    values = [r["val_accuracy"] for r in metrics["history"]]
    assert metrics["best_epoch"] == 1 + values.index(max(values))


def test_run_folder_open_writes_config_once(tmp_path):
    folder = RunFolder(tmp_path / "r", {"a": 1, "b": {"c": [1, 2]}})
    folder.open()
    first = (tmp_path / "r" / "config.json").read_bytes()
    RunFolder(tmp_path / "r", {"a": 1, "b": {"c": [1, 2]}}).open()
    assert (tmp_path / "r" / "config.json").read_bytes() == first
    with pytest.raises(RunFolderError, match=r"b\.c: \[1, 2\] -> \[1, 3\]"):
        RunFolder(tmp_path / "r", {"a": 1, "b": {"c": [1, 3]}}).open()
