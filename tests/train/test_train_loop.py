"""The training loop: configs, batch plans, checkpoint resume, a short real FSDD run."""

import json

import pytest
import torch

from deltarnn.errors import ConfigError
from deltarnn.train import TrainConfig, batch_plan, greedy_decode, train
from deltarnn.train.checkpoint import load_weights
from deltarnn.train.ctc import edit_distance


def tiny(**overrides) -> TrainConfig:
    d = {
        "model": {"hidden_size": 16, "num_layers": 1},
        "data": {"split": "take", "batch_size": 16, "limit_train": 96, "limit_test": 40},
        "epochs": 2,
        "seed": 3,
    }
    cfg = TrainConfig.from_dict(d)
    return cfg.with_overrides([f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def test_config_round_trip_json_and_toml(tmp_path):
    cfg = TrainConfig().with_overrides(
        ["model.theta_x=[0.1, 0.2]", "method.delta=true", "data.split=take", "epochs=3"]
    )
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    (tmp_path / "c.toml").write_text(
        '[model]\nkind = "lstm"\nhidden_size = 32\ntheta_h = 0.25\n'
        '[method]\nl1_h = 0.01\ndelta = true\n[data]\ntask = "strings"\n'
    )
    t = TrainConfig.load(tmp_path / "c.toml")
    assert (t.model.kind, t.model.hidden_size, t.model.theta_h) == ("lstm", 32, 0.25)
    assert t.method.l1_h == 0.01 and t.data.task == "strings"
    assert TrainConfig.from_dict(t.to_dict()) == t


@pytest.mark.parametrize(
    "override, match",
    [
        ("model.kind=rnn", "model.kind"),
        ("model.theta_x=-1", "theta_x"),
        ("model.theta_h=[0.1, 0.2, 0.3]", "theta_h"),
        ("model.hidden=3", "unknown config field"),
        ("data.split=random", "data.split"),
        ("epochs=two", "epochs"),
        ("method.learnable_theta=true", "learnable_theta"),
        ("novalue", "section.field=value"),
    ],
)
def test_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig().with_overrides([override])


def test_batch_plan_is_a_deterministic_partition():
    lengths = [int(x) for x in torch.randint(5, 50, (103,))]
    plan = batch_plan(lengths, 10, seed=1, epoch=2)
    assert plan == batch_plan(lengths, 10, seed=1, epoch=2)
    assert plan != batch_plan(lengths, 10, seed=1, epoch=3)
    assert sorted(i for b in plan for i in b) == list(range(103))
    assert all(len(b) <= 10 for b in plan)


def test_greedy_ctc_decoding_and_edit_distance():
    # frames: blank 3 3 blank 3 5 5 -> [3, 3, 5]; padded frames after the length are ignored
    best = torch.tensor([[0, 3, 3, 0, 3, 5, 5, 7]]).t()  # (T, B=1)
    logp = torch.nn.functional.one_hot(best, 8).float().log()
    assert greedy_decode(logp, torch.tensor([7])) == [[3, 3, 5]]
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance([], [4, 4]) == 2
    assert edit_distance([1, 2], [2, 1]) == 2


def test_resume_after_epoch_one_equals_uninterrupted(tmp_path, fsdd):
    cfg = tiny(
        **{
            "method.delta": True,
            "model.theta_x": 0.2,
            "model.theta_h": 0.1,
            "method.theta_warmup_epochs": 1.0,
            "method.l1_h": 0.01,
            "method.noise_sigma": 0.05,
        }
    )
    full = train(cfg, tmp_path / "full", progress=False, evaluate_at_end=False)
    part = train(cfg, tmp_path / "part", progress=False, stop_after_epochs=1)
    assert part == {"interrupted_at_epoch": 1}
    assert json.loads((tmp_path / "part/ckpt-000001/state.json").read_text())["epoch"] == 1
    resumed = train(cfg, tmp_path / "part", progress=False, evaluate_at_end=False)
    a = load_weights(tmp_path / "full/model.safetensors")
    b = load_weights(tmp_path / "part/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert [h["train_loss"] for h in full["history"]] == [
        h["train_loss"] for h in resumed["history"]
    ]
    assert TrainConfig.load(tmp_path / "part/config.json") == cfg


def test_short_fsdd_run_beats_chance(tmp_path, fsdd):
    cfg = tiny(
        **{
            "model.hidden_size": 32,
            "data.limit_train": 600,
            "data.limit_test": 200,
            "data.batch_size": 32,
            "epochs": 5,
        }
    )
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["metric"] == "accuracy"
    assert metrics["value"] > 0.5, metrics["value"]  # chance is 0.1
    saved = json.loads((tmp_path / "run/metrics.json").read_text())
    assert saved["value"] == metrics["value"]
    assert saved["cost"]["total"]["mac_reduction"] >= 1.0
    assert (tmp_path / "run/normalizer.json").exists()


def test_delta_retraining_from_dense_lowers_cost(tmp_path, fsdd):
    dense = train(tiny(), tmp_path / "dense", progress=False)
    delta_cfg = tiny(
        **{
            "method.init_from": str(tmp_path / "dense"),
            "method.delta": True,
            "model.theta_x": 0.3,
            "model.theta_h": 0.3,
            "epochs": 1,
        }
    )
    delta = train(delta_cfg, tmp_path / "delta", progress=False)
    assert dense["cost"]["total"]["mac_reduction"] < 1.5
    assert delta["cost"]["total"]["mac_reduction"] > 2.0


def test_learnable_theta_run_loads_with_load_model_and_eval(tmp_path, fsdd):
    from deltarnn.cli.main import main
    from deltarnn.train import evaluate_run, load_model

    cfg = tiny(
        **{
            "method.delta": True,
            "method.learnable_theta": True,
            "method.occupancy_cost": 0.5,
            "model.theta_x": 0.25,
            "model.theta_h": 0.25,
            "data.limit_train": 32,
            "data.limit_test": 16,
            "epochs": 1,
        }
    )
    run = tmp_path / "run"
    metrics = train(cfg, run, progress=False)
    model, loaded_cfg, data = load_model(run)
    theta_x, theta_h = model.rnn.thresholds(0)
    # learned per feature, and loaded in that shape
    saved = load_weights(run / "model.safetensors")
    assert saved["rnn.theta_x_l0"].shape == (40,) and saved["rnn.theta_h_l0"].shape == (16,)
    torch.testing.assert_close(theta_x, saved["rnn.theta_x_l0"], rtol=0, atol=0)
    assert evaluate_run(model, data).value == metrics["value"]
    assert main(["eval", str(run), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["value"] == metrics["value"]
