"""Cost in one pass: forward/stream(count=True) + CostReport.from_counts equal measure; the
accumulator sums batches; the NeuroBench names are computed from the same counts."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import deltarnn
from deltarnn.errors import ConfigError


def walk(steps, batch, features, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.randn(steps, batch, features, generator=g) * 0.2, dim=0)


@pytest.fixture(params=["GRU", "LSTM"])
def module(request):
    torch.manual_seed(0)
    return getattr(deltarnn, f"Delta{request.param}")(5, 7, 2, theta_x=0.15, theta_h=0.1)


def test_counts_of_forward_and_stream_give_the_measured_report(module):
    x = walk(30, 3, 5, seed=1)
    expected = deltarnn.measure(module, x).to_dict()
    with torch.no_grad():
        *_, from_forward = module(x, count=True)
        *_, from_stream = module.stream(x, count=True)
    for counts in (from_forward, from_stream):
        assert deltarnn.CostReport.from_counts(module, counts).to_dict() == expected
    assert 0 < expected["total"]["occupancy_h"] < 1


def test_packed_counts_give_the_report_of_the_padded_batch_with_lengths(module):
    x = walk(12, 4, 5, seed=2)
    lengths = torch.tensor([12, 5, 9, 1])
    with torch.no_grad():
        *_, counts = module(pack_padded_sequence(x, lengths, enforce_sorted=False), count=True)
    report = deltarnn.CostReport.from_counts(module, counts, lengths=lengths)
    expected = deltarnn.measure(module, x, lengths=lengths)  # padded steps run but not counted
    assert report.to_dict()["layers"][0]["steps"] == int(lengths.sum())
    assert report.total("delta_macs") == expected.total("delta_macs")
    assert report.total("sent_h") == expected.total("sent_h")


def test_accumulator_sums_batches_like_one_report(module):
    meter = deltarnn.CostAccumulator(module)
    with pytest.raises(ConfigError, match="update"):
        meter.compute()
    batches = [walk(10 + 5 * i, 2, 5, seed=10 + i) for i in range(3)]
    reports = []
    with torch.no_grad():
        for x in batches:
            *_, counts = module(x, count=True)
            meter.update(counts, torch.tensor([x.shape[0], x.shape[0] - 3]))
            reports.append(
                deltarnn.measure(module, x, lengths=torch.tensor([x.shape[0], x.shape[0] - 3]))
            )
    total = meter.compute()
    assert meter.updates == 3
    assert total.to_dict() == (reports[0] + reports[1] + reports[2]).to_dict()
    meter.reset()
    assert meter.updates == 0


def test_neurobench_names_beside_ours():
    torch.manual_seed(0)
    gru = deltarnn.DeltaGRU(4, 6, theta_x=0.2, theta_h=0.1)
    with torch.no_grad():
        gru.weight_hh_l0[:, :3] = 0  # 18 x 3 of the 18 x 10 weights are zero
    x = walk(20, 1, 4, seed=3)
    report = deltarnn.measure(gru, x)
    nb = report.to_dict()["neurobench"]
    assert nb["effective_macs"] == report.total("delta_macs")
    layer = report.layers[0]
    offered = layer.steps * (4 + 6)
    assert nb["activation_sparsity"] == pytest.approx(1 - (layer.sent_x + layer.sent_h) / offered)
    weights = 18 * 4 + 18 * 6 + 2 * 18  # weight matrices and biases
    state = 6 + 4 + 6 + 4 * 6  # h, x̂, ĥ, the memories
    assert nb["footprint_bytes"] == 4 * (weights + state)
    assert nb["connection_sparsity"] == pytest.approx(18 * 3 / (18 * 10))
