"""The benchmark harness: controlled inputs, the bound, calibration, rows, CLI output."""

from __future__ import annotations

import json

import pytest
import torch

from deltarnn import bench
from deltarnn import functional as F
from deltarnn.bench.inputs import THETA_X
from deltarnn.errors import ConfigError


@pytest.mark.parametrize("occupancy", [0.0, 0.02, 0.3, 1.0])
def test_controlled_sequence_has_exact_input_occupancy(occupancy):
    steps, batch, features = 12, 2, 50
    x = bench.controlled_sequence(steps, batch, features, occupancy, seed=3)
    assert x.shape == (steps, batch, features) and x.dtype == torch.float32
    assert x.abs().max() <= 1.0
    assert torch.equal(x * 4, (x * 4).round())  # on the grid k/4
    delta, _ = F.delta_encode(x, THETA_X, torch.zeros(batch, features))
    sent = (delta != 0).sum(-1)
    # From the second step on exactly round(o * I) features move, and all of them are sent.
    assert torch.equal(sent[1:], torch.full((steps - 1, batch), round(occupancy * features)))


def test_controlled_sequence_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="occupancy"):
        bench.controlled_sequence(3, 1, 4, 1.5)
    with pytest.raises(ConfigError, match="batch"):
        bench.controlled_sequence(3, 0, 4, 0.5)


def test_bound_matches_the_formula_and_the_accountant():
    # GRU, I = H = 1024, 10 %: 3H(I+H) / (3H(0.1 I + 0.1 H) + 2(I+H)).
    h = 1024
    expected = 3 * h * 2 * h / (3 * h * 0.2 * h + 4 * h)
    assert bench.compute_speedup_bound("GRU", h, h, 0.1, 0.1) == pytest.approx(expected)
    assert bench.compute_speedup_bound("LSTM", 40, 8, 0.0, 0.0) == pytest.approx(4 * 8 / 2)
    assert bench.compute_speedup_bound("GRU", 7, 9, 1.0, 1.0) < 1.0
    with pytest.raises(ValueError, match="occupancy_h"):
        bench.compute_speedup_bound("GRU", 7, 9, 0.5, 1.5)
    model = pytest.importorskip("deltarnn.cost.model")
    for o_x, o_h in ((0.02, 0.05), (0.5, 0.3), (1.0, 1.0)):
        cost = model.layer_step_cost("GRU", 33, 130, o_x, o_h)
        assert bench.compute_speedup_bound("GRU", 33, 130, o_x, o_h) == pytest.approx(
            cost.compute_speedup
        )


def test_calibrate_finds_the_crossing():
    def occupancy_of(theta):  # falls with theta, 0.2 at theta = 0.8
        return max(0.0, 1.0 - theta)

    theta, occ = bench.calibrate(occupancy_of, 0.2)
    assert theta == pytest.approx(0.8, abs=1e-4) and occ == pytest.approx(0.2, abs=1e-4)
    assert bench.calibrate(occupancy_of, 1.0) == (0.0, 1.0)  # already at or below at 0
    theta, occ = bench.calibrate(lambda t: 1.0 / (1.0 + t), 0.1)  # beyond the first range
    assert occ == pytest.approx(0.1, abs=1e-3) and theta > 1.0


def test_run_benchmark_rows():
    config = bench.BenchConfig(
        hidden_sizes=(9,), occupancies=(0.25, 1.0), steps=6, prefix_steps=3, repeats=2, warmup=0
    )
    rows = bench.run_benchmark(config)
    methods = {r.method for r in rows}
    assert {"torch_gru", "torch_grucell", "reference"} <= methods
    if bench.harness.load_backend("cpu") is not None:
        assert {"cpu", "cpu_stream", "cpu_int8"} <= methods
        int8 = [r for r in rows if r.method == "cpu_int8"]
        assert all(0.0 <= r.extra["max_abs_dev"] < 0.1 for r in int8)
    for r in rows:
        assert r.us_per_step > 0 and r.bound > 0 and r.hidden_size == r.input_size == 9
        assert r.occupancy_x == pytest.approx(round(r.target_occupancy * 9) / 9)
        assert (r.fraction_of_bound is None) == (r.method not in bench.harness.DELTA_METHODS)
        if r.method == "torch_gru":
            assert r.speedup == 1.0
    dense = [r for r in rows if r.target_occupancy == 1.0]
    assert all(r.theta_h == 0.0 and r.occupancy_h > 0.5 for r in dense)
    table = bench.format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "torch_gru" in table
    assert torch.get_num_threads() >= 1


def test_cli_json_to_stdout(capsys):
    argv = ["--hidden", "6", "--occupancy", "0.5", "--steps", "4", "--prefix", "2"]
    argv += ["--repeats", "1", "--warmup", "0", "--methods", "torch_gru", "reference", "--json"]
    assert bench.cli_main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in doc["rows"]] == ["torch_gru", "reference"]
    assert doc["config"]["hidden_sizes"] == [6] and doc["environment"]["torch"]


def test_config_is_checked():
    with pytest.raises(ConfigError, match="methods"):
        bench.BenchConfig(methods=("nope",))
    with pytest.raises(ConfigError, match="occupancies"):
        bench.BenchConfig(occupancies=(2.0,))
    with pytest.raises(ConfigError, match="real_files must be >= 1, got 0"):
        bench.BenchConfig(real_files=0)
    with pytest.raises(ConfigError, match="warmup must be >= 0, got -1"):
        bench.BenchConfig(warmup=-1)


def test_fsdd_log_mel(data_root):
    pytest.importorskip("librosa")
    feats = bench.fsdd_log_mel(data_root, files=2)
    assert feats.dim() == 3 and feats.shape[1:] == (1, 40) and feats.shape[0] > 20
    torch.testing.assert_close(feats.mean(0), torch.zeros(1, 40), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(0, unbiased=False), torch.ones(1, 40), atol=1e-3, rtol=0)
