"""Fast delta training against autograd through the functional spec.

Outputs, final state, counts and the gradients w.r.t. x, every part of the initial state (h, c,
x̂, ĥ, and m, hence the biases) and both weights must agree: to 1e-10 in float64, to float32
rounding in float32. The torch implementation runs in this process; the Triton kernels run under
Triton's interpreter in a subprocess (Triton picks interpreter or compiler at import), and compiled
on a GPU when there is one.
"""

from __future__ import annotations

import pytest
import torch
from tests.interpreted import run_interpreted

from deltarnn import functional as F
from deltarnn.errors import BackendError
from deltarnn.ops import triton_train as tt

try:
    from deltarnn.ops import triton as tb
    from deltarnn.ops import triton_common

    INTERPRETED = triton_common.interpret()
except ImportError:  # no triton: the torch implementation is still tested
    tb, triton_common, INTERPRETED = None, None, False

needs_interpreter = pytest.mark.skipif(not INTERPRETED, reason="run by test_interpreter_subprocess")


@pytest.mark.skipif(tb is None or INTERPRETED, reason="needs triton; not inside the subprocess")
def test_interpreter_subprocess():
    """The Triton cases of this file, in a fresh process where Triton interprets the kernels."""
    assert " passed" in run_interpreted("-m", "not gpu", "-k", "triton", __file__, timeout=900)


def make_case(kind, steps, batch, inputs, hidden, dtype, device="cpu", seed=0, warm=True):
    """Leaf tensors (weights, biases, x, h0, c0) and a state; with ``warm`` the state continues a
    stream (non-zero x̂ and ĥ, memories away from the biases) so their gradients are exercised."""
    gen = torch.Generator().manual_seed(seed)
    gates = 3 if kind == "gru" else 4

    def randn(*shape, scale):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    def grid(*shape):
        return (torch.randint(-8, 9, shape, generator=gen).to(dtype) / 8).to(device)

    leaves = {
        "w_ih": randn(gates * hidden, inputs, scale=0.4),
        "w_hh": randn(gates * hidden, hidden, scale=0.4),
        "b_ih": randn(gates * hidden, scale=0.2),
        "b_hh": randn(gates * hidden, scale=0.2),
        "h0": randn(batch, hidden, scale=0.5),
        "c0": randn(batch, hidden, scale=0.5),
    }
    leaves = {k: v.to(device).requires_grad_() for k, v in leaves.items()}
    leaves["x"] = grid(steps, batch, inputs).requires_grad_()
    prefix = grid(2, batch, inputs) if warm else None
    return leaves, prefix


def initial_state(kind, leaves, prefix, theta_x, theta_h):
    """The state a layer starts from: fresh, or after a prefix run through the spec (so x̂, ĥ and
    m carry gradients back to the leaves too)."""
    l = leaves
    batch = l["h0"].shape[0]
    if kind == "gru":
        state = F.gru_initial_state(l["w_ih"], l["b_ih"], l["b_hh"], batch, h0=l["h0"])
    else:
        state = F.lstm_initial_state(l["w_ih"], l["b_ih"], l["b_hh"], batch, h0=l["h0"], c0=l["c0"])
    if prefix is not None:
        run = F.delta_gru if kind == "gru" else F.delta_lstm
        _, state, _ = run(prefix, state, l["w_ih"], l["w_hh"], theta_x, theta_h)
    return state


def loss_of(out, state, counts):
    """A loss that touches every output with fixed random weights, and the L1 sums of the counts."""
    gen = torch.Generator().manual_seed(123)

    def w(t):
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t)

    loss = (w(out) * out).sum() + sum((w(t) * t).sum() for t in state)
    return loss + 0.3 * counts.abs_h.sum() + 0.2 * counts.abs_x.sum()


def run_and_grad(fn, kind, leaves, prefix, theta_x, theta_h, **kwargs):
    state = initial_state(kind, leaves, prefix, theta_x, theta_h)
    out, new_state, counts = fn(
        leaves["x"], state, leaves["w_ih"], leaves["w_hh"], theta_x, theta_h, count=True, **kwargs
    )
    names = [k for k in leaves if kind == "lstm" or k != "c0"]
    grads = torch.autograd.grad(loss_of(out, new_state, counts), [leaves[k] for k in names])
    return out, new_state, counts, dict(zip(names, grads, strict=True))


def compare(kind, impl, shape, theta_x, theta_h, dtype, atol, device="cpu", warm=True, **kwargs):
    leaves, prefix = make_case(kind, *shape, dtype, device=device, warm=warm)
    spec = F.delta_gru if kind == "gru" else F.delta_lstm
    fast = tt.delta_gru_train if kind == "gru" else tt.delta_lstm_train
    expected = run_and_grad(spec, kind, leaves, prefix, theta_x, theta_h)
    got = run_and_grad(fast, kind, leaves, prefix, theta_x, theta_h, impl=impl, **kwargs)
    (out_e, state_e, counts_e, grads_e), (out_g, state_g, counts_g, grads_g) = expected, got
    torch.testing.assert_close(out_g, out_e, atol=atol, rtol=0)
    assert type(state_g) is type(state_e)
    for name, e, g in zip(state_e._fields, state_e, state_g, strict=True):
        torch.testing.assert_close(g, e, atol=atol, rtol=0, msg=f"state.{name}")
    for name in ("nx", "nh", "ux", "uh"):
        assert torch.equal(getattr(counts_g, name), getattr(counts_e, name)), name
    for name in ("abs_x", "abs_h"):
        torch.testing.assert_close(
            getattr(counts_g, name), getattr(counts_e, name), atol=atol * 10, rtol=0
        )
    for name, e in grads_e.items():
        torch.testing.assert_close(grads_g[name], e, atol=atol * 10, rtol=0, msg=f"d/d{name}")


SHAPES = [(1, 1, 5, 7), (5, 3, 7, 33)]
SHAPE_IDS = ["T1-B1-I5-H7", "T5-B3-I7-H33"]
THETAS = [(0.0, 0.0), (3 / 16, 0.1)]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("thetas", THETAS, ids=["theta0", "theta"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_torch_float64_equals_spec(kind, thetas, shape):
    compare(kind, "torch", shape, *thetas, torch.float64, atol=1e-11)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_torch_float32_equals_spec(kind):
    compare(kind, "torch", (6, 4, 9, 20), 3 / 16, 0.1, torch.float32, atol=2e-6)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_torch_fresh_state_per_feature_thresholds(kind):
    theta_x = torch.tensor([0.0, 3 / 16, 5 / 16, 0.0, 7 / 16], dtype=torch.float64)
    theta_h = torch.linspace(0.0, 0.2, 7, dtype=torch.float64)
    compare(kind, "torch", (4, 2, 5, 7), theta_x, theta_h, torch.float64, 1e-11, warm=False)


@needs_interpreter
@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("thetas", THETAS, ids=["theta0", "theta"])
def test_triton_float64_equals_spec(kind, thetas):
    compare(kind, "triton", (4, 3, 7, 33), *thetas, torch.float64, atol=1e-11)


@needs_interpreter
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_triton_float32_and_edge_shapes(kind):
    compare(kind, "triton", (3, 17, 5, 18), 3 / 16, 0.1, torch.float32, atol=2e-6)
    compare(kind, "triton", (1, 1, 3, 5), 3 / 16, 0.1, torch.float64, atol=1e-11, warm=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy on NaN
@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_interpreter)])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_nan_and_inf_inputs_are_sent_like_the_spec(kind, impl):
    """The send rule of the spec, ``not |Δ| <= Θ``: a NaN (or inf) change is sent, so NaN
    reaches the outputs, state and counts where the spec has it (forward values; no gradient)."""
    leaves, prefix = make_case(kind, 4, 2, 5, 7, torch.float64)
    with torch.no_grad():
        x = leaves["x"].detach().clone()
        x[1, 0, 2] = float("nan")
        x[2, 1, 3] = float("inf")
        state = initial_state(kind, leaves, prefix, 3 / 16, 0.1)
        weights = (leaves["w_ih"], leaves["w_hh"], 3 / 16, 0.1)
        spec = F.delta_gru if kind == "gru" else F.delta_lstm
        fast = tt.delta_gru_train if kind == "gru" else tt.delta_lstm_train
        biases = {"bias_ih": leaves["b_ih"], "bias_hh": leaves["b_hh"]}  # the spec's re-sync
        expected = spec(x, state, *weights, count=True, **biases)
        got = fast(x, state, *weights, count=True, impl=impl)
    close = {"atol": 1e-11, "rtol": 0, "equal_nan": True}
    torch.testing.assert_close(got[0], expected[0], **close)
    assert torch.isnan(got[0][1:, 0]).all()
    for name, e, g in zip(expected[1]._fields, expected[1], got[1], strict=True):
        torch.testing.assert_close(g, e, msg=f"state.{name}", **close)
    for name in ("nx", "nh", "ux", "uh"):
        assert torch.equal(getattr(got[2], name), getattr(expected[2], name)), name


@needs_interpreter
def test_triton_segments_equal_spec(monkeypatch):
    """A sequence run in segments (what graphed training does to bound its graph cache) gives the
    spec's outputs, state, counts and gradients: the state is carried across segments."""
    split = triton_common.segments
    monkeypatch.setattr(triton_common, "segments", lambda steps, graphed: split(steps, True, 2))
    compare("gru", "triton", (5, 2, 5, 9), 3 / 16, 0.1, torch.float64, atol=1e-11)


def recurrence_inputs(lstm, steps=3, batch=2, hidden=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gates = 4 if lstm else 3

    def randn(*shape, scale=0.5):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    c0 = randn(batch, hidden) if lstm else None
    return (randn(steps, batch, 4 * hidden), randn(batch, hidden), randn(batch, hidden), c0,
            randn(gates * hidden, hidden))  # fmt: skip


def send_margin(p, h0, hhat0, c0, w_hh, theta):
    """How far the run's send decisions are from flipping (smallest | |h - ĥ| - Θ |), and the
    fraction of sends."""
    with torch.no_grad():
        out, hhat_seq, *_, send = tt.DeltaRecurrence.apply(
            p, h0, hhat0, c0, w_hh, theta, "torch", False
        )
        h_prev = torch.cat((h0[None], out[:-1]))
        hhat_prev = torch.cat((hhat0[None], hhat_seq[:-1]))
        margin = float(((h_prev - hhat_prev).abs() - theta).abs().min())
        return margin, float(send.double().mean())


def check_gradcheck(lstm, impl, thresholds, fast_mode=False, **sizes):
    p, h0, hhat0, c0, w_hh = recurrence_inputs(lstm, **sizes)
    theta = None
    for value in thresholds:  # the first threshold no finite difference (1e-6) can flip
        candidate = torch.full((h0.shape[1],), value, dtype=torch.float64)
        margin, sent = send_margin(p, h0, hhat0, c0, w_hh, candidate)
        if margin > 1e-3 and (value == 0.0 or 0.0 < sent < 1.0):
            theta = candidate
            break
    assert theta is not None, "no threshold with send decisions away from flipping"
    inputs = (p, h0, hhat0) + ((c0,) if lstm else ()) + (w_hh,)

    def fn(*args):
        c = args[3] if lstm else None
        out, hhat_seq, m, c_last, _ = tt.DeltaRecurrence.apply(
            args[0], args[1], args[2], c, args[-1], theta, impl, False
        )
        return (out, hhat_seq, m, c_last) if lstm else (out, hhat_seq, m)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=fast_mode)


THRESHOLDS = [0.05 + 0.02 * i for i in range(10)]


@pytest.mark.parametrize("lstm", [False, True], ids=["gru", "lstm"])
@pytest.mark.parametrize("thresholds", [[0.0], THRESHOLDS], ids=["theta0", "theta"])
def test_gradcheck_torch(lstm, thresholds):
    check_gradcheck(lstm, "torch", thresholds)


@needs_interpreter
@pytest.mark.parametrize("lstm", [False, True], ids=["gru", "lstm"])
def test_gradcheck_triton(lstm):
    # fast_mode (random projections of the Jacobian): each interpreted launch costs milliseconds.
    check_gradcheck(lstm, "triton", THRESHOLDS, fast_mode=True, steps=2, batch=2, hidden=3)


def test_impl_choice_and_errors():
    x = torch.zeros(2, 1, 3)
    assert tt._resolve_impl("auto", x) == "torch"
    with pytest.raises(BackendError, match="impl must be one of"):
        tt._resolve_impl("fast", x)
    if tb is not None and not INTERPRETED:
        with pytest.raises(BackendError, match="CUDA"):
            tt._resolve_impl("triton", x)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_empty_sequence(kind):
    leaves, _ = make_case(kind, 0, 2, 3, 5, torch.float64, warm=False)
    state = initial_state(kind, leaves, None, 0.0, 0.0)
    fast = tt.delta_gru_train if kind == "gru" else tt.delta_lstm_train
    out, same, counts = fast(
        leaves["x"], state, leaves["w_ih"], leaves["w_hh"], 0.1, 0.1, count=True
    )
    assert out.shape == (0, 2, 5) and same is state and counts.nx.shape == (0, 2)


@pytest.mark.gpu
@pytest.mark.skipif(INTERPRETED, reason="compiled kernels")
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_triton_on_gpu_equals_spec(kind, cuda_device):
    torch.backends.cuda.matmul.allow_tf32 = False
    for use_graph in (False, True, True):  # eager, graph capture, graph replay
        shape, dev = (6, 20, 9, 40), cuda_device
        compare(kind, "triton", shape, 3 / 16, 0.1, torch.float32, 2e-5, dev, use_graph=use_graph)
    compare(kind, "triton", (4, 3, 7, 33), 3 / 16, 0.1, torch.float64, 1e-10, device=cuda_device)
