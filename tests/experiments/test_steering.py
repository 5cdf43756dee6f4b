"""The steering experiment script: the split with its gap, the model's parts, costs per frame,
the equal-cost baseline, and a tiny end-to-end run of the protocol on synthetic frames."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from deltarnn.data import steering as data_steering
from deltarnn.errors import ConfigError
from deltarnn.train import RMSE, Row, evaluate

pytestmark = pytest.mark.usefixtures("isolated_cache")

FRAMES = 200  # per session: 140 train (76 after the gap), 20 val, 40 test


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    """Two sessions of FRAMES frames at 10 per second: a bright bar moves across the image, the
    angle follows it; the second session slows down near its end (a crash)."""
    root = tmp_path_factory.mktemp("sim")
    sim = root / data_steering.STEERING_DIR
    rows = []
    for name in ("a", "b"):
        (sim / name).mkdir(parents=True)
        for i in range(FRAMES):
            img = np.zeros((24, 48, 3), np.uint8)
            col = int(20 + 18 * math.sin(i / 9))
            img[:, col : col + 4] = 255
            Image.fromarray(img).save(sim / name / f"f{i:03d}.jpg", quality=95)
            angle = (col - 22) / 22
            speed = 5.0 if name == "b" and i >= FRAMES - 15 else 30.0
            rows.append([name, f"f{i:03d}.jpg", f"{0.1 * i:.3f}", f"{angle:.4f}", "1", "0", speed])
    with open(sim / data_steering.LABELS_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(data_steering.COLUMNS)
        w.writerows(rows)
    return root


def small(steering, root, **kw):
    fields = dict(
        root=str(root),
        crop=[2, 2],
        height=24,
        width=48,
        features=6,
        hidden_size=8,
        seeds=[0, 1],
        stride=8,
        batch_size=4,
        dense_epochs=1,
        retrain_epochs=1,
        learnable_epochs=1,
        thetas_x=[0.5, 1.5],
        thetas_h=[0.1],
        retrain=[[0.5, 0.1]],
        learnable=[0.5, 0.1],
        block_frames=10,
    )
    fields.update(kw)
    return steering.SteeringConfig(**fields)


def _conv_out(n: int, k: int) -> int:
    return (n - k) // 2 + 1


def test_cnn_macs_from_shapes(steering):
    cnn = steering.FrameCNN(24, 48, features=10)
    h1, w1 = _conv_out(24, 5), _conv_out(48, 5)
    h2, w2 = _conv_out(h1, 3), _conv_out(w1, 3)
    h3, w3 = _conv_out(h2, 3), _conv_out(w2, 3)
    expected = {
        "convs.0": 16 * h1 * w1 * 3 * 25,
        "convs.2": 32 * h2 * w2 * 16 * 9,
        "convs.4": 48 * h3 * w3 * 32 * 9,
        "fc": 48 * h3 * w3 * 10,
    }
    assert steering.cnn_macs(cnn) == {**expected, "total": sum(expected.values())}
    assert all(not m._forward_hooks for m in cnn.modules())  # no hooks left behind


def test_frame_cnn_features_are_layer_normed(steering):
    torch.manual_seed(0)
    cnn = steering.FrameCNN(24, 48, features=6, dropout=0.5).eval()
    x = torch.rand(5, 3, 24, 48)
    y = cnn(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(5), atol=1e-5, rtol=0)
    # unit spread up to the norm's eps, which matters against an untrained layer's small spread
    v = cnn.fc(cnn.convs(x - 0.5).flatten(1)).var(1, unbiased=False)
    expected = v / (v + cnn.norm.eps)
    torch.testing.assert_close(y.var(1, unbiased=False), expected, atol=1e-4, rtol=1e-4)


def test_split_keeps_a_gap_between_train_and_validation(steering, sim_root):
    cfg = small(steering, sim_root, gap_frames=64)
    data = steering.load_pieces(cfg)
    assert [len(p.angles) for p in data["train"]] == [140 - 64] * 2
    assert [len(p.angles) for p in data["val"]] == [20, 20]
    assert [len(p.angles) for p in data["test"]] == [40, 40]
    assert data["test"][1].speed[-15:].max() < cfg.crash_speed  # the synthetic crash


def test_gru_regressor_at_theta_zero_is_the_dense_gru(steering):
    cfg = steering.SteeringConfig(features=5, hidden_size=6)
    torch.manual_seed(0)
    model = steering.GRURegressor(cfg)
    feats = [(torch.rand(12, 5) * 2 - 1, torch.rand(12)), (torch.rand(7, 5), torch.rand(7))]
    result = evaluate(model, steering.feature_streams(feats), RMSE())
    gru = torch.nn.GRU(5, 6)
    gru.load_state_dict({k: v for k, v in model.rnn.state_dict().items() if "theta" not in k})
    se = 0.0
    for f, y in feats:
        out, _ = gru(f[:, None])
        se += float(((model.seq.head(out).detach()[:, 0, 0] - y) ** 2).sum())
    assert result.value == pytest.approx(math.sqrt(se / 19), rel=1e-5)
    assert result.cost.layers[0].steps == 19  # each piece one stream of its own length


def test_held_output_baseline_holds_every_kth_prediction(steering):
    cfg = steering.SteeringConfig(features=4, hidden_size=5, block_frames=3)
    torch.manual_seed(0)
    dense = steering.SteeringModel(cfg)
    feats = torch.randn(10, 4)
    target = torch.randn(10)
    prep = steering.Prepared(dense, None, [], steering.feature_streams([(feats, target)]))
    r = steering.held_output_row(cfg, 0, prep, 3, 1.0, [np.full(10, 30.0)])
    sub = dense.gru(feats[::3, None]).detach()[:, 0]  # frames 0, 3, 6, 9
    held = sub.repeat_interleave(3)[:10]
    assert r.value == pytest.approx(float(((held - target) ** 2).mean().sqrt()), rel=1e-6)
    assert r.method == "held_k3" and r.mac_reduction == 3.0 and r.ops_reduction == 3.0
    assert r.extra["item_den"] == [3, 3, 3, 1]


def _row(method, red, *, split="test", theta_x=0.1, theta_h=0.1, seed=0, value=1.0) -> Row:
    """A steering row whose MAC, ops and byte reductions are all ``red``."""
    return Row(
        task="steering",
        split=split,
        method=method,
        theta_x=theta_x,
        theta_h=theta_h,
        seed=seed,
        metric="rmse",
        value=value,
        dense_value=1.0,
        mac_reduction=red,
        byte_reduction=red,
        ops_reduction=red,
        occupancy_x=0.1,
        occupancy_h=0.1,
    )


def test_network_cost_of_a_row(steering):
    cost = steering.NetworkCost(
        cnn_macs=900, cnn_weight_bytes=400, rnn_macs=100, rnn_weight_bytes=400, head_macs=10
    )

    w = cost.whole(_row("delta", 10.0))
    assert w["network_mac_reduction"] == pytest.approx((910 + 100) / (910 + 10))
    assert w["network_byte_reduction"] == pytest.approx((440 + 400) / (440 + 40))
    assert cost.whole(_row("delta", None))["network_ops_reduction"] == pytest.approx(1010 / 910)
    assert cost.whole(_row("held_k7", 7.0)) == {
        "network_mac_reduction": 7.0,
        "network_ops_reduction": 7.0,
        "network_byte_reduction": 7.0,
    }
    full = steering.NetworkCost.of(steering.SteeringConfig(height=24, width=48, features=6))
    assert full.rnn_macs == 3 * 256 * (6 + 256) and full.head_macs == 256


def test_at_target_is_the_least_loss_that_reaches_the_target_on_validation(steering):
    def row(method, tx, seed, value, red, split="val"):
        th = 0.0 if method == "dense" else 0.5
        return _row(method, red, split=split, theta_x=tx, theta_h=th, seed=seed, value=value)

    rows = []
    for seed in (0, 1):
        rows += [row("dense", 0.0, seed, 1.0, 1.0), row("converted", 0.1, seed, 1.01, 50.0)]
        rows += [row("delta", 0.4, seed, 1.25, 120.0), row("delta", 0.5, seed, 1.5, 200.0)]
        rows += [row("delta_l1", 0.4, seed, 1.1 + 0.1 * seed, 99.0 + 2 * seed)]  # mean 100x
        rows += [row("delta", 0.3, seed, 1.0, 500.0, split="test")]  # test rows are never read
    spec = steering.REPORT
    got = steering.at_target(rows, spec)
    assert (got["method"], got["theta_x"], got["chosen_on"]) == ("delta_l1", 0.4, "validation")
    assert got["val_loss_relative"] == pytest.approx(0.15)
    assert got["val_mac_reduction"] == pytest.approx(100.0)
    no_delta_l1 = [r for r in rows if r.method != "delta_l1"]
    assert steering.at_target(no_delta_l1, spec)["theta_x"] == 0.4
    below = [r for r in rows if r.mac_reduction < 100]
    assert steering.at_target(below, spec) is None  # nothing reaches 100x


def test_config_validation(steering):
    st = steering
    with pytest.raises(ConfigError, match="17x17"):
        st.SteeringConfig(height=16).validate()
    with pytest.raises(ConfigError, match="seq_len"):
        st.SteeringConfig(seq_len=32).validate()
    with pytest.raises(ConfigError, match="gap_frames"):
        st.SteeringConfig(gap_frames=10).validate()
    with pytest.raises(ConfigError, match="Θ"):
        st.SteeringConfig(retrain=[[0.0, 0.1]]).validate()
    with pytest.raises(ConfigError, match="val_fraction"):
        st.SteeringConfig(train_fraction=0.9, val_fraction=0.1).validate()


def test_tiny_end_to_end(steering, sim_root, tmp_path):
    st = steering
    cfg = small(steering, sim_root, gap_frames=64)
    here = tmp_path / "exp"
    results = here / "results.json"
    st.run_experiment(cfg, tmp_path / "run", str(results))
    rows = [Row.from_dict(d) for d in json.loads(results.read_text())]
    val = [r for r in rows if r.split == "val"]
    test = [r for r in rows if r.split == "test"]
    per_seed = {"dense", "converted", "control", *st.RETRAINED, "learnable"}
    assert {r.method for r in val} == per_seed
    assert len([r for r in val if r.method == "converted"]) == 2 * 2  # grid x seeds
    selection = json.loads((here / "selection.json").read_text())
    assert selection["chosen_on"] == "validation"
    assert selection["method"] != "control"
    # test: only dense, control, the selected and learnable runs, and the held baselines
    chosen = {"dense", "control", selection["method"], "learnable"}
    chosen |= {selection["at_target"]["method"]} if selection["at_target"] else set()
    assert {r.method for r in test} - chosen == {
        m for m in {r.method for r in test} if m.startswith("held_k")
    }
    assert all("item_num" in r.extra and "network_mac_reduction" in r.extra for r in test)
    summary = json.loads((here / "summary.json").read_text())
    assert set(summary) - {"at_target"} == set(
        "claim target budget metric dense_test selected test met command".split()
    )
    target = selection["at_target"]
    assert target is None or {r.method for r in test} >= {target["method"]}
    assert ("at_target" in summary) == (target is not None)
    assert set(summary["dense_test"]) == {"mean", "sd", "ci95", "n_seeds"}
    assert summary["dense_test"]["n_seeds"] == 2
    assert set(summary["test"]) == {"metric", "loss_vs_dense", "mac_reduction", "ops_reduction"}
    lo, hi = summary["test"]["loss_vs_dense"]["ci95"]
    assert lo <= summary["test"]["loss_vs_dense"]["mean"] <= hi
    details = json.loads((here / "details.json").read_text())
    pieces = details["configurations"]["dense"]["pieces"]
    assert [p["piece"] for p in pieces] == ["a", "b", "all"]
    assert pieces[1]["crash_frames"] == 15 and pieces[1]["without_crash"]["frames"] == 25
    ceiling = details["label_predictability"]["val"][0]
    assert ceiling["r2_centred_average_3s"] < ceiling["r2_centred_average_1s"] <= 1
    # the stages are run folders, reused by a second run: the same rows
    assert (tmp_path / "run/seed1/learnable-0.5-0.1/MANIFEST.json").is_file()
    st.run_experiment(cfg, tmp_path / "run", str(results))
    again = [Row.from_dict(d) for d in json.loads(results.read_text())]
    assert [r.key for r in again] == [r.key for r in rows]
    # (the loaded weights give the trained ones' numbers up to float32 summation order)
    assert [r.value for r in again] == pytest.approx([r.value for r in rows], rel=1e-6)
    table, plot = tmp_path / "table.md", tmp_path / "plot.png"
    assert st.main(["--results", str(results), "--render", str(table), str(plot)]) == 0
    text = table.read_text()
    assert "per piece" in text and "whole network" in text and "variance is slow" in text
    assert plot.stat().st_size > 1000
