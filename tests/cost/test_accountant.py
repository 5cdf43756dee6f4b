"""The accountant: counted MACs equal the masks' MACs; the paper's limits of the cost model."""

from __future__ import annotations

import json

import pytest
import torch
from tests.step_by_step import delta_rnn

import deltarnn
from deltarnn.cost import layer_step_cost, matvec_cost


@pytest.mark.parametrize("kind,gates", [("GRU", 3), ("LSTM", 4)])
def test_delta_macs_equal_macs_implied_by_masks(kind, gates, grid_input):
    torch.manual_seed(0)
    module = getattr(deltarnn, f"Delta{kind}")(
        5, 7, theta_x=3 / 16, theta_h=0.05, dtype=torch.float64
    )
    x = grid_input(20, 3, 5, seed=0)
    report = deltarnn.measure(module, x)
    p = [t.detach().numpy() for t in module.layer_weights(0)]
    _, sent_x, sent_h = delta_rnn(kind, x.numpy(), *p, 3 / 16, 0.05)
    layer = report.layers[0]
    assert layer.delta_macs == gates * 7 * (sent_x.sum() + sent_h.sum())
    assert layer.dense_macs == gates * 7 * (5 + 7) * 20 * 3
    assert layer.occupancy_x == pytest.approx(sent_x.mean())
    assert layer.occupancy_h == pytest.approx(sent_h.mean())
    # the batched engine fetches the union of the samples' columns at each step
    union = sent_x.any(1).sum() + sent_h.any(1).sum()
    assert layer.delta_weight_bytes_batched == gates * 7 * union * 8
    assert layer.delta_weight_bytes == layer.delta_macs * 8  # float64 weights


def test_counted_macs_match_the_analytic_model_at_the_observed_occupancy():
    torch.manual_seed(1)
    module = deltarnn.DeltaGRU(6, 10, 2, theta_x=0.1, theta_h=0.1)
    x = torch.cumsum(torch.randn(50, 1, 6) * 0.1, 0)
    report = deltarnn.measure(module, x)
    for layer in report.layers:
        predicted = layer_step_cost(
            "GRU", layer.input_size, layer.hidden_size, layer.occupancy_x, layer.occupancy_h
        )
        assert layer.delta_macs == pytest.approx(predicted.delta_macs * layer.steps)
        assert layer.dense_macs == pytest.approx(predicted.dense_macs * layer.steps)
        assert layer.compute_speedup == pytest.approx(predicted.compute_speedup)


def test_full_occupancy_is_no_speedup_and_zero_occupancy_is_the_papers_limit():
    n = 1000
    full = matvec_cost(n, 1.0)
    assert full.compute_speedup < 1.0  # the 2n overhead
    assert full.memory_speedup() < 1.0  # the 4n overhead
    empty = matvec_cost(n, 1e-12)
    assert empty.compute_speedup == pytest.approx(n / 2, rel=1e-6)  # n² / 2n
    assert empty.memory_speedup(4, 4) == pytest.approx((n + 1) / 4, rel=1e-6)  # (n² + n) / 4n
    # about 1/o in between, for large n
    assert matvec_cost(n, 0.1).compute_speedup == pytest.approx(1 / (0.1 + 2 / n))


def test_theta_zero_run_reports_no_saving_on_a_changing_signal():
    module = deltarnn.DeltaGRU(4, 8)
    report = deltarnn.measure(module, torch.randn(10, 2, 4))
    assert report.occupancy_x == 1.0
    assert report.compute_speedup < 1.0


def test_lengths_exclude_padded_steps():
    torch.manual_seed(2)
    module = deltarnn.DeltaGRU(3, 4, theta_x=0.0, theta_h=0.0)
    x = torch.randn(6, 2, 3)
    full = deltarnn.measure(module, x[:, :1])
    padded = deltarnn.measure(module, x, lengths=torch.tensor([6, 2]))
    short = deltarnn.measure(module, x[:2, 1:])
    assert padded.layers[0].dense_macs == full.layers[0].dense_macs + short.layers[0].dense_macs
    assert padded.layers[0].delta_macs == full.layers[0].delta_macs + short.layers[0].delta_macs
    assert padded.layers[0].delta_weight_bytes_batched is None


def test_report_sums_serialises_and_prints():
    module = deltarnn.DeltaLSTM(3, 5, 2, theta_x=0.1, theta_h=0.1)
    a = deltarnn.measure(module, torch.randn(8, 1, 3))
    b = deltarnn.measure(module, torch.randn(4, 1, 3))
    total = a + b
    assert total.total("delta_macs") == a.total("delta_macs") + b.total("delta_macs")
    d = json.loads(json.dumps(total.to_dict()))
    assert d["total"]["dense_macs"] == 4 * 5 * (3 + 5) * 12 + 4 * 5 * (5 + 5) * 12
    assert len(d["layers"]) == 2
    text = str(total)
    assert "all" in text and "occ x" in text


def test_measure_rejects_a_torch_module():
    with pytest.raises(deltarnn.ConfigError, match="from_torch"):
        deltarnn.measure(torch.nn.GRU(3, 4), torch.randn(5, 1, 3))
