"""Streamer constructors check thresholds and ``step`` checks its frame, naming the argument."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("numba")

from deltarnn import functional as F  # noqa: E402
from deltarnn.errors import ShapeError, ThresholdError  # noqa: E402
from deltarnn.ops import cpu  # noqa: E402

B, I, H = 2, 3, 5


def gru_streamer(theta_x=0.1, theta_h=0.1):
    w_ih, w_hh = torch.randn(3 * H, I), torch.randn(3 * H, H)
    state = F.gru_initial_state(w_ih, None, None, B)
    return cpu.CPUStreamer(cpu.pack(w_ih, w_hh), state, theta_x, theta_h)


@pytest.mark.parametrize(
    "theta,match",
    [
        (math.nan, "theta_h must be finite and >= 0, got nan"),
        (-0.1, "theta_h must be finite and >= 0, got -0.1"),
        (torch.tensor([0.1, 0.1, math.inf, 0.1, 0.1]), r"\[2\] = inf"),
        (torch.zeros(H + 1), r"theta_h must be a scalar or of shape \(5,\)"),
        ("0.1", "theta_h must be a float or a tensor, got str"),
    ],
)
def test_cpu_streamer_rejects_bad_thresholds(theta, match):
    with pytest.raises(ThresholdError, match=match):
        gru_streamer(theta_h=theta)


def test_cpu_streamer_step_rejects_a_list():
    streamer = gru_streamer()
    with pytest.raises(ShapeError, match=r"x must be a tensor or array of shape \(2, 3\).*list"):
        streamer.step([[0.0] * I] * B)
    assert streamer.step(torch.zeros(B, I)).shape == (B, H)


@pytest.mark.parametrize("theta", [math.nan, -1.0, torch.zeros(H + 1)])
def test_triton_streamer_rejects_bad_thresholds(theta):
    """Checked before anything touches a device, so this runs on any machine with triton."""
    tb = pytest.importorskip("deltarnn.ops.triton")
    w_ih, w_hh = torch.randn(3 * H, I), torch.randn(3 * H, H)
    state = F.gru_initial_state(w_ih, None, None, B)
    with pytest.raises(ThresholdError, match="theta_h"):
        tb.TritonStreamer(tb.pack(w_ih, w_hh), state, 0.1, theta)
