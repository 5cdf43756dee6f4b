"""Training methods: quantiser, noise, threshold schedule, L1 cost, learnable thresholds."""

import pytest
import torch

from deltarnn import DeltaGRU
from deltarnn.errors import ConfigError
from deltarnn.train import (
    FixedPointRound,
    GaussianNoise,
    LearnableDeltaEncoder,
    MethodConfig,
    ModelConfig,
    SequenceModel,
    delta_l1_cost,
    fixed_point_range,
    quantize,
    threshold_schedule,
)


def test_quantize_gradcheck_float64():
    # A fine grid (2**-40) makes rounding invisible to finite differences (eps 1e-6), so the
    # numerical Jacobian is the clamp's: 1 inside the range, 0 where it saturates.
    torch.manual_seed(0)
    x = torch.empty(40, dtype=torch.float64).uniform_(-3.5, 3.5)
    x = torch.cat([x, torch.tensor([-6.0, 5.0, 9.0], dtype=torch.float64)]).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: quantize(t, 2, 40), (x,), eps=1e-6, atol=1e-5)


def test_quantize_grid_and_saturation():
    lo, hi = fixed_point_range(3, 5)
    assert (lo, hi) == (-8.0, 8.0 - 1 / 32)
    x = torch.linspace(-10, 10, 2001)
    q = quantize(x, 3, 5)
    assert torch.equal(q * 32, torch.round(q * 32))  # on the 1/32 grid
    assert q.min() == lo and q.max() == hi
    inside = (x > lo) & (x < hi)
    assert (q - x)[inside].abs().max() <= 1 / 64 + 1e-6  # nearest grid point
    assert torch.equal(quantize(torch.tensor([0.3]), 0, 0), torch.tensor([0.0]))


def test_quantize_straight_through_gradient():
    x = torch.tensor([-9.0, -1.3, 0.01, 2.49, 7.99, 8.5], requires_grad=True)
    quantize(x, 3, 2).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # 7.99 > hi = 7.75: saturated


def test_quantize_rejects_negative_bits():
    with pytest.raises(ConfigError, match="int_bits"):
        quantize(torch.zeros(2), -1, 3)
    with pytest.raises(ConfigError):
        FixedPointRound(2, -1)


def test_noise_only_in_training():
    noise = GaussianNoise(0.5)
    x = torch.zeros(1000)
    noise.train()
    y = noise(x)
    assert 0.4 < y.std().item() < 0.6
    noise.eval()
    assert torch.equal(noise(x), x)
    with pytest.raises(ConfigError, match="sigma"):
        GaussianNoise(-1.0)


def test_noise_reaches_the_rnn_only_in_training():
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(hidden_size=8, num_layers=2), 4, 3)
    x, lengths = torch.randn(6, 2, 4), torch.tensor([6, 4])
    model.eval()
    clean = model(x, lengths)
    model.apply_method(MethodConfig(noise_sigma=0.3))
    model.train()
    assert not torch.allclose(model(x, lengths), clean)
    model.eval()
    torch.testing.assert_close(model(x, lengths), clean)


def test_threshold_schedule():
    assert threshold_schedule(0.0, 0.4, 2) == 0.0
    assert threshold_schedule(1.0, 0.4, 2) == pytest.approx(0.2)
    assert threshold_schedule(2.0, 0.4, 2) == pytest.approx(0.4)
    assert threshold_schedule(7.5, 0.4, 2) == pytest.approx(0.4)
    assert threshold_schedule(0.0, 0.4, 0) == pytest.approx(0.4)
    with pytest.raises(ConfigError):
        threshold_schedule(1.0, 0.4, -1)


def test_l1_cost_masks_padding_and_normalises_per_frame():
    torch.manual_seed(0)
    rnn = DeltaGRU(3, 5, num_layers=2, theta_x=0.0, theta_h=0.0, backend="reference")
    x = torch.randn(7, 2, 3)
    _, _, counts = rnn.stream(x, count=True)
    lengths = torch.tensor([7, 3])
    cost = delta_l1_cost(counts, lengths, weight_x=1.0, weight_h=2.0)
    expected = (
        sum(
            c.abs_x[:7, 0].sum()
            + c.abs_x[:3, 1].sum()
            + 2 * (c.abs_h[:7, 0].sum() + c.abs_h[:3, 1].sum())
            for c in counts
        )
        / 10
    )
    torch.testing.assert_close(cost, expected)
    assert delta_l1_cost(counts, lengths, weight_x=0, weight_h=0).item() == 0.0


def _occupancy_after_training(l1_h: float) -> float:
    """Train a tiny delta GRU to track a slow signal; return its hidden-side occupancy."""
    torch.manual_seed(0)
    rnn = DeltaGRU(2, 12, theta_x=0.0, theta_h=0.02, backend="reference")
    head = torch.nn.Linear(12, 1)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
    t = torch.linspace(0, 6, 20)[:, None, None]
    phase = torch.rand(1, 8, 1) * 6
    x = torch.cat([torch.sin(t + phase), torch.cos(0.5 * t + phase)], dim=-1)  # (20, 8, 2)
    target = x.sum(-1, keepdim=True)
    for _ in range(40):
        out, _, counts = rnn.stream(x, count=True)
        loss = torch.nn.functional.mse_loss(head(out), target)
        loss = loss + delta_l1_cost(counts, None, weight_h=l1_h)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, _, counts = rnn.stream(x, count=True)
    return counts[0].nh.sum().item() / counts[0].nh.numel() / 12


def test_l1_on_delta_h_lowers_occupancy():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead
    try:
        plain = _occupancy_after_training(0.0)
        sparse = _occupancy_after_training(3.0)
    finally:
        torch.set_num_threads(threads)
    assert sparse < 0.7 * plain, (plain, sparse)


def test_learnable_encoder_matches_fixed_threshold_and_gets_gradient():
    torch.manual_seed(0)
    # Values on a 1/8 grid and Θ at a midpoint between grid steps: no mask bit sits on a tie.
    x = (torch.randint(-16, 16, (9, 3, 4)) / 8.0).double()
    theta = 0.3125
    enc = LearnableDeltaEncoder(torch.tensor(theta, dtype=torch.float64))
    x_hat, last, soft = enc(x)
    assert torch.equal(last, x_hat[-1]) and soft.shape == x.shape
    # The state is explicit: two halves from the returned x̂ give the one-pass result.
    first, mid, _ = enc(x[:4])
    second, _, _ = enc(x[4:], mid)
    torch.testing.assert_close(torch.cat([first, second]), x_hat)
    # Feeding x̂ to a Θ = 0 encoding sends exactly where a Θ encoding of x sends.
    from deltarnn.functional import delta_encode

    d_ref, _ = delta_encode(x, theta, torch.zeros(3, 4, dtype=torch.float64))
    d_hat, _ = delta_encode(x_hat.detach(), 0.0, torch.zeros(3, 4, dtype=torch.float64))
    torch.testing.assert_close(d_hat, d_ref)
    (x_hat * torch.randn_like(x_hat)).sum().backward()
    assert enc.log_theta.grad is not None and enc.log_theta.grad.abs() > 0
    occ = enc.soft_occupancy(soft)
    assert 0 < occ.item() < 1


def test_learnable_threshold_model_trains_and_bakes():
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(hidden_size=8, num_layers=2, theta_x=0.2, theta_h=0.1), 4, 3)
    model.apply_method(MethodConfig(delta=True, learnable_theta=True, occupancy_cost=1.0))
    x, lengths = torch.randn(10, 5, 4), torch.tensor([10, 9, 8, 7, 6])
    labels = torch.tensor([0, 1, 2, 0, 1])
    encoders = model.learnable_encoders()
    assert len(encoders) == 4
    before = [e.theta.detach().clone() for e in encoders]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        out = model.run(x, lengths)
        loss = torch.nn.functional.cross_entropy(out.y, labels) + out.soft_occupancy
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = [e.theta.detach().clone() for e in encoders]
    assert all(bool((a > b).all()) for a, b in zip(after, before, strict=True))  # pushed up
    model.eval()
    with torch.no_grad():
        y_enc = model(x, lengths)
        model.bake_thresholds()
        y_baked = model(x, lengths)
    assert model.learnable_encoders() == []
    torch.testing.assert_close(model.rnn.thresholds(1)[1], after[3])
    torch.testing.assert_close(y_baked, y_enc, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_dense_fast_path_equals_the_delta_module_at_theta_zero(kind):
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(kind=kind, hidden_size=6, num_layers=2), 3, 4).double()
    x, lengths = torch.randn(7, 2, 3, dtype=torch.float64), torch.tensor([7, 5])
    from deltarnn.train.model import _is_dense

    assert _is_dense(model.rnn)
    fast = model(x, lengths)
    (fast.sum()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out, _ = model.rnn(x)  # the delta module itself (reference backend with gradients)
    from deltarnn.train.model import pool

    slow = model.head(pool(out, lengths, "mean"))
    slow.sum().backward()
    torch.testing.assert_close(fast, slow)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_model_dropout_reaches_the_rnn_and_acts_in_training_only():
    model = SequenceModel(ModelConfig(hidden_size=8, num_layers=2, dropout=0.5), 4, 3)
    assert model.rnn.dropout == 0.5
    x, lengths = torch.randn(6, 2, 4), torch.tensor([6, 4])
    model.eval()
    torch.testing.assert_close(model(x, lengths), model(x, lengths))
    model.train()
    torch.manual_seed(0)
    a = model(x, lengths)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x, lengths))


def test_regression_head_returns_per_frame_outputs_without_softmax():
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(hidden_size=6, num_layers=1), 3, 2, True, regression=True)
    x, lengths = torch.randn(5, 2, 3), torch.tensor([5, 5])
    out, _ = model.rnn(x)
    torch.testing.assert_close(model(x, lengths), model.head(out))
    with pytest.raises(ConfigError, match="per_frame"):
        SequenceModel(ModelConfig(hidden_size=6), 3, 1, regression=True)
