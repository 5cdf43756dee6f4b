"""The spec names a wrong state, weight or threshold instead of failing inside a matmul."""

from __future__ import annotations

import pytest
import torch

from deltarnn import functional as F
from deltarnn.errors import DeviceError, DTypeError, ShapeError, ThresholdError

B, I, H = 2, 4, 6


def gru_args(**change):
    w_ih, w_hh = torch.randn(3 * H, I), torch.randn(3 * H, H)
    args = {
        "x": torch.randn(3, B, I),
        "state": F.gru_initial_state(w_ih, None, None, B),
        "weight_ih": w_ih,
        "weight_hh": w_hh,
        "theta_x": 0.1,
        "theta_h": 0.1,
    }
    args.update(change)
    return args


def test_good_arguments_run():
    out, _, _ = F.delta_gru(**gru_args())
    assert out.shape == (3, B, H)


@pytest.mark.parametrize(
    "change,error,match",
    [
        ({"x": torch.randn(B, I)}, ShapeError, "x must be a 3-D tensor, got shape"),
        ({"x": torch.randn(3, B, I + 1)}, ShapeError, r"weight_ih must have shape \(18, 5\)"),
        ({"x": torch.randn(3, B + 1, I)}, ShapeError, r"state.h must have shape \(3, 6\)"),
        ({"weight_hh": torch.randn(3 * H, H + 1)}, ShapeError, r"weight_hh .* \(3H, H\)"),
        ({"weight_ih": torch.randn(I, 3 * H)}, ShapeError, r"weight_ih must have shape \(18, 4\)"),
        ({"state": (torch.zeros(B, H),) * 4}, ShapeError, "state must be a DeltaGRUState"),
        ({"theta_x": torch.zeros(I + 1)}, ThresholdError, r"theta_x must be .* \(4,\)"),
        ({"theta_h": torch.zeros(2, H)}, ThresholdError, r"theta_h must be .* \(6,\)"),
        ({"x": torch.randn(3, B, I, dtype=torch.float64)}, DTypeError, "weight_ih has dtype"),
        ({"x": torch.empty(3, B, I, device="meta")}, DeviceError, "weight_ih is on cpu"),
    ],
)
def test_wrong_gru_arguments_named(change, error, match):
    with pytest.raises(error, match=match):
        F.delta_gru(**gru_args(**change))


def test_wrong_state_fields_named():
    state = gru_args()["state"]
    with pytest.raises(ShapeError, match=r"state.m must have shape \(2, 24\)"):
        F.delta_gru(**gru_args(state=state._replace(m=torch.zeros(B, 3 * H))))
    with pytest.raises(ShapeError, match=r"state.x_hat must have shape \(2, 4\)"):
        F.delta_gru(**gru_args(state=state._replace(x_hat=torch.zeros(B, I + 1))))
    with pytest.raises(DTypeError, match="state.h_hat has dtype torch.float64"):
        F.delta_gru(**gru_args(state=state._replace(h_hat=state.h_hat.double())))


def test_lstm_needs_its_own_state_and_gate_count():
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H)
    x = torch.randn(3, B, I)
    state = F.lstm_initial_state(w_ih, None, None, B)
    out, _, _ = F.delta_lstm(x, state, w_ih, w_hh, 0.1, 0.1)
    assert out.shape == (3, B, H)
    with pytest.raises(ShapeError, match="state must be a DeltaLSTMState, got DeltaGRUState"):
        F.delta_lstm(**gru_args(weight_ih=w_ih, weight_hh=w_hh))
    with pytest.raises(ShapeError, match=r"weight_hh of a delta LSTM must have shape \(4H, H\)"):
        F.delta_lstm(x, state, torch.randn(3 * H, I), torch.randn(3 * H, H), 0.1, 0.1)
    with pytest.raises(ShapeError, match=r"state.c must have shape \(2, 6\)"):
        F.delta_lstm(x, state._replace(c=torch.zeros(B, H + 1)), w_ih, w_hh, 0.1, 0.1)


def test_autocast_mixes_dtypes_on_purpose():
    args = gru_args(x=torch.randn(3, B, I, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.delta_gru(**args)
