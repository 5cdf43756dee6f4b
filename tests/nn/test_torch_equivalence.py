"""Θ = 0: the delta modules equal torch.nn.GRU/LSTM (outputs, final states and gradients)."""

from __future__ import annotations

import itertools

import pytest
import torch

import deltarnn

TOL = 1e-10
CASES = list(
    itertools.product(("GRU", "LSTM"), (1, 2, 3), (False, True), (True, False), (False, True))
)


def _pair(kind, layers, batch_first, bias):
    torch.manual_seed(layers * 7 + batch_first + 2 * bias)
    dense = getattr(torch.nn, kind)(
        5, 6, num_layers=layers, bias=bias, batch_first=batch_first
    ).double()
    return dense, deltarnn.from_torch(dense)


@pytest.mark.parametrize("kind,layers,batch_first,bias,with_h0", CASES)
def test_theta_zero_equals_torch(kind, layers, batch_first, bias, with_h0):
    dense, delta = _pair(kind, layers, batch_first, bias)
    batch, steps = 3, 9
    shape = (batch, steps, 5) if batch_first else (steps, batch, 5)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    hx = None
    if with_h0:
        h0 = torch.randn(layers, batch, 6, dtype=torch.float64)
        hx = h0 if kind == "GRU" else (h0, torch.randn_like(h0))
    out_d, hn_d = dense(x, hx)
    out_t, hn_t = delta(x, hx)
    torch.testing.assert_close(out_t, out_d, atol=TOL, rtol=0)
    finals_d = hn_d if kind == "LSTM" else (hn_d,)
    finals_t = hn_t if kind == "LSTM" else (hn_t,)
    for a, b in zip(finals_t, finals_d, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    # gradients of one loss through outputs and final states, w.r.t. the input and every weight
    weights = torch.randn_like(out_d)
    loss_d = (out_d * weights).sum() + sum(f.square().sum() for f in finals_d)
    loss_t = (out_t * weights).sum() + sum(f.square().sum() for f in finals_t)
    grads_d = torch.autograd.grad(loss_d, [x, *dense.parameters()])
    grads_t = torch.autograd.grad(loss_t, [x, *delta.parameters()])
    assert len(grads_d) == len(grads_t)
    for a, b in zip(grads_t, grads_d, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_unbatched_and_float32(kind):
    torch.manual_seed(0)
    dense = getattr(torch.nn, kind)(4, 5, num_layers=2)
    delta = deltarnn.from_torch(dense)
    x = torch.randn(7, 4)
    out_d, _ = dense(x)
    out_t, _ = delta(x)
    assert out_t.shape == (7, 5)
    torch.testing.assert_close(out_t, out_d, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["GRUCell", "LSTMCell"])
def test_cells_theta_zero_equal_torch(kind):
    torch.manual_seed(1)
    dense = getattr(torch.nn, kind)(4, 5).double()
    delta = deltarnn.from_torch(dense)
    x = torch.randn(3, 4, dtype=torch.float64)
    h = torch.randn(3, 5, dtype=torch.float64)
    hx = h if kind == "GRUCell" else (h, torch.randn_like(h))
    ref = dense(x, hx)
    got, state = delta(x, hx)
    torch.testing.assert_close(got, ref if kind == "GRUCell" else ref[0], atol=TOL, rtol=0)
    if kind == "LSTMCell":
        torch.testing.assert_close(state.c, ref[1], atol=TOL, rtol=0)
    # unbatched
    got1, _ = delta(x[0], tuple(t[0] for t in hx) if kind == "LSTMCell" else h[0])
    torch.testing.assert_close(got1, got[0], atol=TOL, rtol=0)


def test_conversion_round_trip_keeps_weights():
    torch.manual_seed(2)
    for dense in (
        torch.nn.GRU(3, 4, 2, batch_first=True),
        torch.nn.LSTM(3, 4),
        torch.nn.GRUCell(3, 4),
    ):
        delta = deltarnn.from_torch(dense, theta_x=0.1, theta_h=0.2)
        back = deltarnn.to_torch(delta)
        assert type(back) is type(dense)
        for (name_a, a), (name_b, b) in zip(
            dense.state_dict().items(), back.state_dict().items(), strict=True
        ):
            assert name_a == name_b
            assert torch.equal(a, b)
        assert float(delta.theta_x_l0) == pytest.approx(0.1)
        assert float(delta.theta_h_l0) == pytest.approx(0.2)


def test_torch_state_dict_loads_as_is_and_keeps_thresholds():
    dense = torch.nn.GRU(3, 4, 2)
    delta = deltarnn.DeltaGRU(3, 4, 2, theta_x=0.3, theta_h=0.2)
    result = delta.load_state_dict(dense.state_dict())  # strict by default
    assert not result.missing_keys and not result.unexpected_keys
    assert float(delta.theta_x_l1) == pytest.approx(0.3)
    # a delta state dict carries its thresholds
    other = deltarnn.DeltaGRU(3, 4, 2)
    other.load_state_dict(delta.state_dict())
    assert float(other.theta_h_l0) == pytest.approx(0.2)
    # only some thresholds present: reported, not silently filled
    partial = {k: v for k, v in delta.state_dict().items() if k != "theta_h_l1"}
    with pytest.raises(RuntimeError, match="theta_h_l1"):
        other.load_state_dict(partial)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(3)
    dense = torch.nn.GRU(4, 6, num_layers=2, dropout=0.5)
    delta = deltarnn.from_torch(dense)
    x = torch.randn(5, 2, 4)
    delta.eval()
    dense.eval()
    torch.testing.assert_close(delta(x)[0], dense(x)[0], atol=1e-6, rtol=1e-6)
    delta.train()
    torch.manual_seed(4)
    a = delta(x)[0]
    torch.manual_seed(5)
    b = delta(x)[0]
    assert not torch.allclose(a, b), "dropout=0.5 in training mode must change the output"
