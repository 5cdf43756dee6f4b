"""Delta encoding: strict threshold, bounded error, no drift over long streams."""

from __future__ import annotations

import torch

from deltarnn import functional as F


def test_sends_strictly_above_threshold_against_last_sent_value():
    theta = 0.25
    x = torch.tensor([[0.0], [0.25], [0.5], [0.625], [0.75], [0.5]]).unsqueeze(-1)  # (T, 1, 1)
    delta, x_hat = F.delta_encode(x, theta, torch.zeros(1, 1))
    # 0.25 is not > 0.25: not sent; 0.5 is; 0.625 and 0.75 are within 0.25 of 0.5; 0.5 unchanged
    assert delta.flatten().tolist() == [0.0, 0.0, 0.5, 0.0, 0.0, 0.0]
    assert x_hat.item() == 0.5


def test_sub_threshold_drift_is_not_lost():
    # a slow ramp: each step moves 0.1 < Θ, but the change since the last send accumulates
    x = torch.arange(0, 3, 0.1, dtype=torch.float64).reshape(-1, 1, 1)
    delta, x_hat = F.delta_encode(x, 0.25, torch.zeros(1, 1, dtype=torch.float64))
    assert (delta != 0).sum() >= 9
    assert abs(x[-1].item() - x_hat.item()) <= 0.25


def test_theta_zero_is_lossless_and_skips_exact_repeats():
    x = torch.tensor([1.0, 1.0, 2.0, 2.0, 2.0, -1.0]).reshape(-1, 1, 1)
    delta, x_hat = F.delta_encode(x, 0.0, torch.zeros(1, 1))
    assert delta.flatten().tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, -3.0]
    torch.testing.assert_close(torch.cumsum(delta, 0), x, atol=0, rtol=0)


def test_error_bounded_by_theta_over_100k_steps():
    """|x_t - x̂_t| <= Θ at every step of a 100,000-step random walk, and Σ Δ == x̂ (no drift)."""
    g = torch.Generator().manual_seed(0)
    steps, features = 100_000, 8
    theta = torch.linspace(0.01, 0.3, features, dtype=torch.float64)
    x = torch.cumsum(torch.randn(steps, 1, features, generator=g, dtype=torch.float64) * 0.05, 0)
    x_hat = torch.zeros(1, features, dtype=torch.float64)
    worst = torch.zeros(features, dtype=torch.float64)
    total = torch.zeros(1, features, dtype=torch.float64)
    for chunk in torch.split(x, 10_000):
        delta, x_hat_next = F.delta_encode(chunk, theta, x_hat)
        held = x_hat + torch.cumsum(delta, 0)  # x̂ after each step
        worst = torch.maximum(worst, (chunk - held).abs().amax((0, 1)))
        total += delta.sum(0)
        x_hat = x_hat_next
    assert bool((worst <= theta).all())
    torch.testing.assert_close(total, x_hat, atol=1e-9, rtol=0)


def test_gru_over_100k_steps_stays_near_dense():
    """The delta GRU's error against the dense GRU does not grow along a 100,000-step stream."""
    torch.manual_seed(0)
    dense = torch.nn.GRU(4, 8)
    steps = 100_000
    t = torch.arange(steps, dtype=torch.float32)[:, None, None]
    x = torch.sin(t * torch.tensor([0.001, 0.003, 0.007, 0.013]))
    h0 = torch.zeros(1, 8)
    state = F.gru_initial_state(
        dense.weight_ih_l0, dense.bias_ih_l0, dense.bias_hh_l0, 1, h0[0:1].clone()
    )
    errors = []
    with torch.no_grad():
        ref, _ = dense(x)
        for i, chunk in enumerate(torch.split(x, 10_000)):
            out, state, _ = F.delta_gru(
                chunk, state, dense.weight_ih_l0, dense.weight_hh_l0, 0.02, 0.02
            )
            errors.append((out - ref[i * 10_000 : (i + 1) * 10_000]).abs().max().item())
        # the accumulated memories still equal W x̂ + W ĥ + b: no float32 drift of the sums
        direct = (
            state.x_hat @ dense.weight_ih_l0.t() + dense.bias_ih_l0,
            state.h_hat @ dense.weight_hh_l0.t() + dense.bias_hh_l0,
        )
    hid = 8
    m_r, m_z, m_xn, m_hn = state.m.chunk(4, 1)
    torch.testing.assert_close(m_r, direct[0][:, :hid] + direct[1][:, :hid], atol=1e-4, rtol=0)
    torch.testing.assert_close(m_xn, direct[0][:, 2 * hid :], atol=1e-4, rtol=0)
    torch.testing.assert_close(m_hn, direct[1][:, 2 * hid :], atol=1e-4, rtol=0)
    assert max(errors) < 0.2
    assert max(errors[5:]) <= 2 * max(errors[:5]) + 1e-3, errors
