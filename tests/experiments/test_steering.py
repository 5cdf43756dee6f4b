"""The steering experiment script: CNN MAC count from the layer shapes, the LayerNorm-ed features,
evaluation as one stream, the held-output baseline, and a tiny end-to-end run on synthetic
frames (selection on validation, test rows, summary.json)."""

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
from deltarnn.train import RMSE, evaluate, read_rows

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def sim_root(tmp_path):
    """Two sessions of 120 frames: a bright bar moves across the image, the angle follows it."""
    sim = tmp_path / "data" / data_steering.STEERING_DIR
    rows = []
    for name in ("a", "b"):
        (sim / name).mkdir(parents=True)
        for i in range(120):
            img = np.zeros((24, 48, 3), np.uint8)
            col = (2 * i) % 48
            img[:, col : col + 4] = 255
            Image.fromarray(img).save(sim / name / f"f{i:03d}.jpg", quality=95)
            angle = (col - 24) / 24
            speed = "30" if i < 110 or name == "a" else "3"  # session b ends in a "crash"
            rows.append(
                [name, f"f{i:03d}.jpg", f"{0.1 * i:.3f}", f"{angle:.4f}", "0.5", "0", speed]
            )
    with open(sim / data_steering.LABELS_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(data_steering.COLUMNS)
        w.writerows(rows)
    return tmp_path / "data"


def _conv_out(n: int, k: int) -> int:
    return (n - k) // 2 + 1


def test_cnn_macs_from_shapes(steering):
    st = steering
    cnn = st.FrameCNN(24, 48, features=10)
    h1, w1 = _conv_out(24, 5), _conv_out(48, 5)
    h2, w2 = _conv_out(h1, 3), _conv_out(w1, 3)
    h3, w3 = _conv_out(h2, 3), _conv_out(w2, 3)
    expected = {
        "convs.0": 16 * h1 * w1 * 3 * 25,
        "convs.2": 32 * h2 * w2 * 16 * 9,
        "convs.4": 48 * h3 * w3 * 32 * 9,
        "fc": 48 * h3 * w3 * 10,
    }
    macs = st.cnn_macs(cnn)
    assert macs == {**expected, "total": sum(expected.values())}
    # no hooks left behind
    assert all(not m._forward_hooks for m in cnn.modules())


def test_frame_cnn_features_are_layer_normed(steering):
    torch.manual_seed(0)
    cnn = steering.FrameCNN(24, 48, features=6)
    x = torch.rand(5, 3, 24, 48)
    y = cnn(x)
    assert y.shape == (5, 6)
    torch.testing.assert_close(y.mean(1), torch.zeros(5), atol=1e-5, rtol=0)
    with torch.no_grad():
        raw = cnn.fc(cnn.convs(x - 0.5).flatten(1)).var(1, unbiased=False)
    # LayerNorm's eps: the spread is var / (var + eps), just under 1
    torch.testing.assert_close(y.var(1, unbiased=False), raw / (raw + 1e-5), atol=1e-4, rtol=0)


def test_evaluate_theta_zero_equals_dense_forward(steering):
    cfg = steering.SteeringConfig(height=24, width=48, features=5, hidden_size=6)
    torch.manual_seed(0)
    model = steering.SteeringModel(cfg)
    feats = [(torch.rand(12, 5) * 2 - 1, torch.rand(12)), (torch.rand(7, 5), torch.rand(7))]
    result = evaluate(model, steering.stream_batches(feats), RMSE())
    se = sum(float(((model(f[:, None]).detach().squeeze(1) - y) ** 2).sum()) for f, y in feats)
    assert result.value == pytest.approx(math.sqrt(se / 19), rel=1e-5)
    assert result.cost.occupancy_x > 0.99
    assert result.cost.layers[0].steps == 19  # each piece one stream of its own length


def test_held_output_baseline_runs_every_kth_frame(steering):
    cfg = steering.SteeringConfig(height=24, width=48, features=4, hidden_size=5)
    torch.manual_seed(0)
    model = steering.SteeringModel(cfg)
    feats = [(torch.randn(10, 4), torch.randn(10))]
    batches = steering.stream_batches(feats)
    prep = steering.Prepared(model, None, [], batches)
    r = steering.held_output_row(cfg, 0, prep, 3, dense_value=1.0)
    with torch.no_grad():
        y = model(feats[0][0][::3, None]).squeeze(1)  # frames 0, 3, 6, 9
    held = y.repeat_interleave(3)[:10]
    assert r.value == pytest.approx(float(((held - feats[0][1]) ** 2).mean().sqrt()), rel=1e-5)
    assert r.mac_reduction == 3.0 and r.method == "held_k3"
    assert sum(r.extra["item_den"]) == 10


def test_config_validation(steering):
    st = steering
    with pytest.raises(ConfigError, match="seq_len"):
        st.SteeringConfig(seq_len=32).validate()
    with pytest.raises(ConfigError, match="retrain_thetas"):
        st.SteeringConfig(retrain_thetas=[0.0]).validate()
    with pytest.raises(ConfigError, match="train_fraction"):
        st.SteeringConfig(train_fraction=0.95).validate()
    with pytest.raises(ConfigError, match="select_seeds"):
        st.SteeringConfig(select_seeds=[5]).validate()


def test_tiny_end_to_end(steering, sim_root, tmp_path, monkeypatch):
    st = steering
    monkeypatch.setattr(st, "validation_budget", lambda rows, constant: 10.0)
    cfg = st.SteeringConfig(
        root=str(sim_root),
        crop=[2, 2],
        height=24,
        width=48,
        features=6,
        hidden_size=8,
        seeds=[0, 1],
        select_seeds=[0],
        cnn_seq_len=8,
        cnn_epochs=1,
        seq_len=64,
        batch_size=4,
        dense_epochs=1,
        retrain_epochs=1,
        thetas=[0.3],
        retrain_thetas=[0.3],
        block_frames=5,
    )
    results = tmp_path / "out" / "results.json"
    st.run_experiment(cfg, str(tmp_path / "run"), str(results))
    rows = read_rows(results)
    val = {r.method for r in rows if r.split == "val"}
    assert val == {"dense", "converted", "control", "delta", "delta_l1"}
    selection = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert selection["chosen_on"] == "validation"
    test = [r for r in rows if r.split == "test"]
    k = max(1, int(selection["val_mac_reduction"]))
    allowed = {"dense", "control", selection["method"], f"held_k{k}"}
    assert {r.method for r in test} == allowed and {r.seed for r in test} == {0, 1}
    assert all(sum(r.extra["item_den"]) == sum(map(len, r.extra["frame_se"])) for r in test)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for key in ("claim", "target", "budget", "metric", "dense_test", "selected", "test", "met"):
        assert key in summary
    pieces = summary["per_piece"]["dense"]
    assert [p["crash_frames"] for p in pieces] == [0, 10]  # session b's slow tail
    assert set(pieces[1]) >= {"all", "without_crash"}
    assert summary["rnn_dense_macs_per_frame"] == 3 * 8 * (6 + 8)
    before = {r.key: r.value for r in rows}
    st.run_experiment(cfg, str(tmp_path / "run"), str(results))  # stages reused
    after = {r.key: r.value for r in read_rows(results)}
    assert after.keys() == before.keys()  # backends may differ in the last bits
    assert all(after[k] == pytest.approx(v, rel=1e-5) for k, v in before.items())
    table, plot = tmp_path / "table.md", tmp_path / "plot.png"
    args = ["--results", str(results), "--render", str(table), str(plot), "hidden_size=8"]
    assert st.main(args) == 0
    assert "split val" in table.read_text() and plot.stat().st_size > 1000
