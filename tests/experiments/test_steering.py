"""The steering experiment script: CNN MAC count from the layer shapes, trivial baselines,
evaluation as one stream, and a tiny end-to-end run on synthetic frames."""

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
from deltarnn.train import RMSE, evaluate

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def sim_root(tmp_path):
    """Two sessions of 30 frames: a bright bar moves across the image, the angle follows it."""
    sim = tmp_path / "data" / data_steering.STEERING_DIR
    rows = []
    for name in ("a", "b"):
        (sim / name).mkdir(parents=True)
        for i in range(30):
            img = np.zeros((24, 48, 3), np.uint8)
            col = (2 * i) % 48
            img[:, col : col + 4] = 255
            Image.fromarray(img).save(sim / name / f"f{i:03d}.jpg", quality=95)
            angle = (col - 24) / 24
            rows.append([name, f"f{i:03d}.jpg", f"{0.1 * i:.3f}", f"{angle:.4f}", "0.5", "0", "9"])
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


def test_frame_cnn_output_is_bounded(steering):
    st = steering
    cnn = st.FrameCNN(24, 48, features=6)
    y = cnn(torch.rand(5, 3, 24, 48))
    assert y.shape == (5, 6) and bool((y.abs() < 1).all())


def test_baselines(steering):
    st = steering
    data = {
        "train_pieces": [(None, torch.tensor([1.0, 3.0]))],
        "test": [(None, torch.tensor([0.0, 4.0])), (None, torch.tensor([2.0]))],
    }
    b = st.baselines(data)
    assert b["train_mean"] == pytest.approx(math.sqrt((4 + 4 + 0) / 3))
    assert b["zero"] == pytest.approx(math.sqrt((0 + 16 + 4) / 3))
    # the previous label of each piece's first frame is itself
    assert b["previous_label"] == pytest.approx(math.sqrt((0 + 16 + 0) / 3))


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


def test_config_validation(steering):
    st = steering
    with pytest.raises(ConfigError, match="16x16"):
        st.SteeringConfig(height=8).validate()
    with pytest.raises(ConfigError, match="retrain_thetas"):
        st.SteeringConfig(retrain_thetas=[0.0]).validate()
    with pytest.raises(ConfigError, match="train_fraction"):
        st.SteeringConfig(train_fraction=1.0).validate()


def test_tiny_end_to_end(steering, sim_root, tmp_path, tiny):
    st = steering
    frames = {"height": 24, "width": 48, "seq_len": 8, "feature_seq_len": 8, "features": 8}
    cfg = st.SteeringConfig(
        root=str(sim_root), thetas=[0.3], retrain_thetas=[0.3], **frames, **tiny
    )
    results = tmp_path / "out" / "results.json"
    summary = st.run_experiment(cfg, tmp_path / "run", results)
    rows = json.loads(results.read_text())
    assert [r["method"] for r in rows] == ["dense", "converted", "delta", "delta_l1"]
    assert all(r["metric"] == "rmse" and r["dense_value"] == rows[0]["value"] for r in rows)
    # the stages are run folders, reused by a second run: the same rows
    assert (tmp_path / "run/delta_l1-theta0.3/MANIFEST.json").is_file()
    st.run_experiment(cfg, tmp_path / "run", results)
    assert json.loads(results.read_text()) == rows
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["cnn_macs_per_frame"] == st.cnn_macs(st.FrameCNN(24, 48, 8))
    assert set(saved["baselines_rmse"]) == {"train_mean", "zero", "previous_label"}
    dense = saved["rows"][0]
    # the dense RNN's MACs per frame are the GRU formula 3K(D + K)
    assert dense["rnn_macs_per_frame"] == saved["rnn_dense_macs_per_frame"] == 3 * 8 * (8 + 8)
    for r in saved["rows"]:
        assert r["total_macs_per_frame"] == pytest.approx(
            saved["cnn_macs_per_frame"]["total"] + r["rnn_macs_per_frame"] + 8
        )
    assert summary["test_frames"] == saved["test_frames"] > 0
    table, plot = tmp_path / "table.md", tmp_path / "plot.png"
    assert st.main(["--results", str(results), "--render", str(table), str(plot)]) == 0
    text = table.read_text()
    assert "Whole network, per frame" in text and "100x target" in text
    assert plot.stat().st_size > 1000
