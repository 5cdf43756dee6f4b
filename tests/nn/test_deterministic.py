"""deterministic=True: float32 weights and I/O, float64 state and accumulation, so every
backend takes the same send decisions over long float32 streams."""

from __future__ import annotations

import copy

import pytest
import torch

import deltarnn
from deltarnn.ops import load_backend

FRAMES = 10_000


@pytest.fixture(scope="module")
def stream():
    g = torch.Generator().manual_seed(1)
    return torch.cumsum(torch.randn(FRAMES, 2, 6, generator=g) * 0.1, dim=0)


def run(module, backend, x, grad):
    m = copy.deepcopy(module)
    m.backend = backend
    with torch.set_grad_enabled(grad):
        out, state, counts = m.stream(x, count=True)
    assert m.last_backend == backend
    return out.detach(), state, counts


# 2,000 frames in the default suite; 10^4 with --runslow (minutes: the reference and fused
# backends step in Python)
@pytest.mark.parametrize(
    "kind, frames",
    [
        ("GRU", 2000),
        ("LSTM", 2000),
        pytest.param("GRU", FRAMES, marks=pytest.mark.slow),
        pytest.param("LSTM", FRAMES, marks=pytest.mark.slow),
    ],
)
def test_every_backend_sends_the_same_over_ten_thousand_float32_frames(kind, frames, stream):
    torch.manual_seed(0)
    stream = stream[:frames]
    module = getattr(deltarnn, f"Delta{kind}")(6, 12, theta_x=0.2, theta_h=0.02, deterministic=True)
    assert module.weight_ih_l0.dtype == torch.float32 and "deterministic=True" in repr(module)
    ref, ref_state, ref_counts = run(module, "reference", stream, grad=False)
    assert ref.dtype == torch.float32 and ref_state[0].m.dtype == torch.float64
    runs = [("fused", True)]  # the training path
    if load_backend("cpu") is not None:
        runs.append(("cpu", False))  # the inference path
    for backend, grad in runs:
        out, state, counts = run(module, backend, stream, grad)
        for c, r in zip(counts, ref_counts, strict=True):
            assert torch.equal(c.nx, r.nx) and torch.equal(c.nh, r.nh), backend
        # float64 inside: the float32 outputs differ by a rounding of the last bit at most
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(state[0].h, ref_state[0].h, atol=1e-12, rtol=0)
    occupancy = ref_counts[0].nh.sum() / ref_counts[0].nh.numel() / 12
    assert 0.02 < occupancy < 0.9  # the thresholds were doing something


def test_chunks_equal_one_pass_and_state_stays_float64(stream):
    torch.manual_seed(0)
    gru = deltarnn.DeltaGRU(6, 8, 2, theta_x=0.2, theta_h=0.1, deterministic=True)
    x = stream[:200]
    with torch.no_grad():
        whole, final = gru.stream(x)
        state, parts = None, []
        for chunk in x.split(37):
            out, state = gru.stream(chunk, state)
            parts.append(out)
    assert torch.equal(torch.cat(parts), whole)
    assert all(s.x_hat.dtype == torch.float64 for s in state)
    torch.testing.assert_close(state[1].m, final[1].m, atol=1e-12, rtol=0)


def test_deterministic_gradients_reach_the_float32_parameters():
    torch.manual_seed(0)
    gru = deltarnn.DeltaGRU(3, 4, deterministic=True)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = gru(x)
    out.sum().backward()
    assert out.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert gru.weight_hh_l0.grad is not None and gru.weight_hh_l0.grad.dtype == torch.float32
    # at Θ = 0 it is torch.nn.GRU, computed in float64
    dense = deltarnn.to_torch(gru).double()
    torch.testing.assert_close(out.double(), dense(x.double())[0], atol=1e-7, rtol=0)
