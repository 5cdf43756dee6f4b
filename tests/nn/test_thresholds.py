"""Θ > 0 against an independent step-by-step implementation, streaming, cells and thresholds."""

from __future__ import annotations

import pytest
import torch
from tests.step_by_step import delta_rnn

import deltarnn
from deltarnn.ops import available_backends


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize("theta_h", [0.0, 0.05])
def test_matches_step_by_step_implementation(kind, theta_h, grid_input):
    torch.manual_seed(0)
    module = getattr(deltarnn, f"Delta{kind}")(
        5, 7, theta_x=3 / 16, theta_h=theta_h, dtype=torch.float64
    )
    x = grid_input(12, 2, 5, seed=1)
    h0 = torch.randn(2, 7, dtype=torch.float64) * 0.5
    hx = h0[None] if kind == "GRU" else (h0[None], torch.randn(1, 2, 7, dtype=torch.float64))
    with torch.no_grad():
        out, _ = module(x, hx)
    p = [t.detach().numpy() for t in module.layer_weights(0)]
    c0 = None if kind == "GRU" else hx[1][0].numpy()
    expected, sent_x, sent_h = delta_rnn(kind, x.numpy(), *p, 3 / 16, theta_h, h0.numpy(), c0)
    torch.testing.assert_close(out, torch.from_numpy(expected), atol=1e-12, rtol=0)
    # the thresholds really did something
    assert 0.1 < sent_x.mean() < 0.9


def test_per_feature_and_per_layer_thresholds(grid_input):
    torch.manual_seed(1)
    theta_x0 = torch.tensor([0.0, 3 / 16, 5 / 16, 100.0])
    module = deltarnn.DeltaGRU(
        4, 6, 2, theta_x=[theta_x0, 0.1], theta_h=[0.0, 0.2], dtype=torch.float64
    )
    assert module.thresholds(0)[0].tolist() == theta_x0.tolist()
    assert module.thresholds(1)[0].tolist() == [0.1] * 6
    x = grid_input(10, 1, 4, seed=2)
    _, state, counts = module.stream(x, count=True)
    # the last feature (Θ = 100) is never sent, but its x̂ stays at 0
    assert state[0].x_hat[0, 3] == 0
    p = [t.detach().numpy() for t in module.layer_weights(0)]
    expected, sent_x, _ = delta_rnn("GRU", x.numpy(), *p, theta_x0.numpy(), 0.0)
    assert counts[0].nx.sum() == sent_x.sum()


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_chunked_stream_equals_one_pass(kind, grid_input):
    torch.manual_seed(2)
    module = getattr(deltarnn, f"Delta{kind}")(
        5, 6, 2, theta_x=3 / 16, theta_h=0.05, dtype=torch.float64
    )
    x = grid_input(23, 3, 5, seed=3)
    with torch.no_grad():
        full, final = module.stream(x)
        state, pieces = None, []
        for chunk in torch.split(x, [1, 7, 4, 11]):
            out, state = module.stream(chunk, state)
            pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces), full, atol=1e-13, rtol=0)
    for a, b in zip(state, final, strict=True):
        for ta, tb in zip(a, b, strict=True):
            torch.testing.assert_close(ta, tb, atol=1e-13, rtol=0)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_cell_stepped_equals_sequence_module(kind, grid_input):
    torch.manual_seed(3)
    seq = getattr(deltarnn, f"Delta{kind}")(5, 6, theta_x=3 / 16, theta_h=0.05, dtype=torch.float64)
    cell = getattr(deltarnn, f"Delta{kind}Cell")(
        5, 6, theta_x=3 / 16, theta_h=0.05, dtype=torch.float64
    )
    cell.load_state_dict(
        {k.removesuffix("_l0"): v for k, v in seq.state_dict().items() if "theta" not in k},
        strict=False,
    )
    x = grid_input(15, 2, 5, seed=4)
    with torch.no_grad():
        full, (final,) = seq.stream(x)
        state, steps = None, []
        for t in range(x.shape[0]):
            h, state = cell(x[t], state)
            steps.append(h)
    torch.testing.assert_close(torch.stack(steps), full, atol=1e-14, rtol=0)
    for a, b in zip(state, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=0)


def test_state_is_explicit_not_hidden_on_the_module():
    module = deltarnn.DeltaGRU(3, 4, theta_x=0.1)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        a = module(x)[0]
        b = module(x)[0]  # a second call starts fresh: nothing was kept on the module
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert module.last_backend in available_backends()


def test_auto_backend_is_differentiable_when_gradients_are_needed():
    module = deltarnn.DeltaGRU(3, 4, theta_x=0.1)
    out, _ = module(torch.randn(5, 2, 3))
    assert out.requires_grad
    assert module.last_backend == "fused"  # the fastest differentiable CPU backend
    module.set_transforms(h_transform=lambda h, layer: torch.round(h))  # needs the reference
    module(torch.randn(5, 2, 3))
    assert module.last_backend == "reference"
