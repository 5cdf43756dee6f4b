"""deltarnn.convert / revert on a user's nested model: every recurrent module swapped in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deltarnn
from deltarnn.errors import ConfigError


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 5, num_layers=2, batch_first=True)
        self.proj = nn.Linear(5, 4)


class Model(nn.Module):
    """A GRU and an LSTM in a submodule, a cell in a ModuleList, one GRU used twice."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = nn.LSTM(4, 6)
        self.cells = nn.ModuleList([nn.GRUCell(6, 6), nn.Linear(6, 6)])
        self.shared = nn.GRU(6, 6)
        self.again = self.shared

    def forward(self, x):  # x (B, T, 3)
        y, _ = self.encoder.rnn(x)
        y, _ = self.decoder(self.encoder.proj(y).transpose(0, 1))
        h = self.cells[0](y[-1])
        h = h[0] if isinstance(h, tuple) else h  # a delta cell returns (h, state)
        z, _ = self.again(self.shared(y)[0])
        return h, z


def test_convert_swaps_nested_modules_in_place_and_revert_restores():
    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    with torch.no_grad():
        dense = model(x)
    returned = deltarnn.convert(model, theta_x=0.0, theta_h={"encoder.rnn": 0.25})
    assert returned is model
    assert type(model.encoder.rnn) is deltarnn.DeltaGRU
    assert model.encoder.rnn.batch_first and model.encoder.rnn.num_layers == 2
    assert type(model.decoder) is deltarnn.DeltaLSTM
    assert type(model.cells[0]) is deltarnn.DeltaGRUCell
    assert type(model.cells[1]) is nn.Linear
    assert model.again is model.shared and type(model.shared) is deltarnn.DeltaGRU
    # per-module thresholds by name; unnamed modules are dense
    assert model.encoder.rnn.thresholds(1)[1].tolist() == [0.25] * 5
    assert model.decoder.thresholds(0)[1].abs().sum() == 0
    with torch.no_grad():
        h, z = model(x)
    # Θ = 0 everywhere except the encoder's Θh: the decoder still equals torch on its input...
    model.encoder.rnn.set_thresholds(theta_h=0.0)
    with torch.no_grad():
        exact = model(x)
    for a, b in zip(exact, dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # ...and the encoder's threshold changed the result before it was reset
    assert (h - dense[0]).abs().max() > 1e-6
    assert deltarnn.revert(model) is model
    assert type(model.encoder.rnn) is nn.GRU and type(model.decoder) is nn.LSTM
    assert type(model.cells[0]) is nn.GRUCell and model.again is model.shared
    assert type(model.shared) is nn.GRU
    with torch.no_grad():
        for a, b in zip(model(x), dense, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_convert_a_bare_module_returns_the_converted_one():
    gru = nn.GRU(3, 4)
    delta = deltarnn.convert(gru, theta_x=0.1)
    assert type(delta) is deltarnn.DeltaGRU and delta.thresholds(0)[0].tolist() == pytest.approx(
        [0.1] * 3
    )
    assert type(deltarnn.revert(delta)) is nn.GRU


def test_convert_rejects_unknown_names_and_names_the_failing_module():
    model = Model()
    with pytest.raises(ConfigError, match=r"theta_x names \['encoder'\]"):
        deltarnn.convert(model, theta_x={"encoder": 0.1})
    assert type(model.encoder.rnn) is nn.GRU  # nothing was swapped
    model.encoder.rnn = nn.GRU(3, 5, bidirectional=True)
    with pytest.raises(ConfigError, match="module 'encoder.rnn'"):
        deltarnn.convert(model)
