"""The torch.library operators ``deltarnn::gru_layer`` / ``lstm_layer`` against the functional spec.

Inputs are on the binary grid k/8 and input thresholds at midpoints (3/16), so a rounding
difference cannot flip an input mask bit; hidden thresholds are compared on fixed seeds.
"""

from __future__ import annotations

import pytest
import torch

from deltarnn import functional as F
from deltarnn.errors import BackendError
from deltarnn.ops import custom_ops

ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}
KINDS = ("GRU", "LSTM")


def make_case(kind, steps, batch, inputs, hidden, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gates = 3 if kind == "GRU" else 4

    def randn(*shape, scale):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    w_ih = randn(gates * hidden, inputs, scale=0.4)
    w_hh = randn(gates * hidden, hidden, scale=0.4)
    b_ih, b_hh = randn(gates * hidden, scale=0.2), randn(gates * hidden, scale=0.2)
    h0 = randn(batch, hidden, scale=0.5)
    if kind == "GRU":
        state = F.gru_initial_state(w_ih, b_ih, b_hh, batch, h0=h0)
    else:
        state = F.lstm_initial_state(w_ih, b_ih, b_hh, batch, h0, randn(batch, hidden, scale=0.5))
    x = (torch.randint(-8, 9, (steps, batch, inputs), generator=gen) / 8).to(dtype)
    theta_x = torch.full((inputs,), 3 / 16, dtype=dtype)
    theta_h = torch.full((hidden,), 0.05, dtype=dtype)
    return x, state, (w_ih, w_hh, b_ih, b_hh), theta_x, theta_h


def spec(kind, x, state, weights, theta_x, theta_h, count, resync_every=0):
    w_ih, w_hh, b_ih, b_hh = weights
    run = F.delta_gru if kind == "GRU" else F.delta_lstm
    return run(
        x, state, w_ih, w_hh, theta_x, theta_h,
        bias_ih=b_ih, bias_hh=b_hh, resync_every=resync_every, count=count,
    )  # fmt: skip


def run_op(kind, x, state, weights, theta_x, theta_h, count, resync_every=0):
    layer = custom_ops.gru if kind == "GRU" else custom_ops.lstm
    packed = custom_ops.pack(*weights)
    return layer(x, state, packed, theta_x, theta_h, count=count, resync_every=resync_every)


def assert_same(got, want, dtype):
    out, state, counts = got
    ref_out, ref_state, ref_counts = want
    torch.testing.assert_close(out, ref_out, atol=ATOL[dtype], rtol=ATOL[dtype])
    assert type(state) is type(ref_state)
    for field, a, b in zip(state._fields, state, ref_state, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL[dtype], rtol=ATOL[dtype], msg=field)
    if ref_counts is None:
        assert counts is None
    else:
        for name in ("nx", "nh", "ux", "uh"):
            assert torch.equal(getattr(counts, name), getattr(ref_counts, name)), name
        for name in ("abs_x", "abs_h"):
            torch.testing.assert_close(
                getattr(counts, name), getattr(ref_counts, name), atol=1e-4, rtol=1e-5
            )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps,batch,inputs,hidden", [(1, 1, 5, 7), (6, 3, 9, 17), (0, 2, 4, 3)])
@pytest.mark.parametrize("count", [False, True])
@pytest.mark.parametrize("resync_every", [0, 2])
def test_operator_equals_spec(kind, dtype, steps, batch, inputs, hidden, count, resync_every):
    x, state, weights, tx, th = make_case(kind, steps, batch, inputs, hidden, dtype)
    before = [t.clone() for t in (x, *state, *weights)]
    got = run_op(kind, x, state, weights, tx, th, count, resync_every)
    want = spec(kind, x, state, weights, tx, th, count, resync_every)
    assert_same(got, want, dtype)
    for a, b in zip(before, (x, *state, *weights), strict=True):
        assert torch.equal(a, b)  # inputs untouched
    outputs = [got[0], *got[1]]
    inputs_ = [x, *state, *weights, tx, th]
    assert not any(o.data_ptr() == i.data_ptr() and o.numel() for o in outputs for i in inputs_)
    assert not any(o is i for o in outputs for i in inputs_)


@pytest.mark.parametrize("kind", KINDS)
def test_spec_kernel_where_no_fast_kernel_runs(kind):
    # bfloat16 has no numba kernel: the CPU kernel falls back to the spec, to bfloat16 rounding.
    x, state, weights, tx, th = make_case(kind, 4, 2, 6, 5, torch.float64)
    bf16 = [t.to(torch.bfloat16) for t in (x, *state[:-1], *weights, tx, th)]
    n = len(state) - 1
    state16 = type(state)(*bf16[1 : 1 + n], state.since_sync)
    args = (bf16[0], state16, tuple(bf16[1 + n : 5 + n]), bf16[-2], bf16[-1], True)
    got, want = run_op(kind, *args), spec(kind, *args)
    assert got[0].dtype == torch.bfloat16
    assert_same(got, want, torch.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_fake_kernel_gives_shapes(kind):
    x, state, weights, tx, th = make_case(kind, 5, 3, 4, 6)
    meta = [t.to("meta") for t in (x, *state, *weights, tx, th)]
    n = len(state)
    args = (meta[0], type(state)(*meta[1 : 1 + n]), tuple(meta[1 + n : 5 + n]), *meta[-2:], True)
    out, new_state, counts = run_op(*(kind, *args))
    assert out.shape == (5, 3, 6) and out.device.type == "meta"
    assert [t.shape for t in new_state] == [t.shape for t in state]
    _, resynced, _ = run_op(kind, *args, resync_every=4)
    assert resynced.since_sync.shape == (3,)  # a counter per sample once the period is on
    assert counts.nx.shape == (5, 3) and counts.ux.shape == (5,)
    assert counts.nx.dtype == torch.int64 and counts.abs_x.shape == (5, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(kind):
    # torch's own consistency checks: schema, fake kernel, autograd registration, dispatch.
    x, state, weights, tx, th = make_case(kind, 3, 2, 4, 5)
    op = getattr(torch.ops.deltarnn, custom_ops.LAYERS[kind].name).default
    for count, resync_every in ((False, 0), (True, 2)):
        torch.library.opcheck(op, (x, *state, *weights, tx, th, count, resync_every))
    torch.library.opcheck(op, (x, *state, *weights[:2], None, None, tx, th, False, 0))


@pytest.mark.parametrize("kind", KINDS)
def test_backward_through_the_operator_raises(kind):
    x, state, weights, tx, th = make_case(kind, 3, 1, 4, 5)
    weights[0].requires_grad_(True)
    out, _, _ = run_op(kind, x, state, weights, tx, th, False)
    with pytest.raises(BackendError, match="no gradient"):
        out.sum().backward()


def test_packed_weights_follow_in_place_updates_and_replacements():
    x, state, weights, tx, th = make_case("GRU", 4, 1, 4, 5)
    first = run_op("GRU", x, state, weights, tx, th, False)[0]
    with torch.no_grad():
        weights[1].mul_(0.5)  # same tensor, new version: must repack
    halved = run_op("GRU", x, state, weights, tx, th, False)[0]
    want = spec("GRU", x, state, weights, tx, th, False)[0]
    torch.testing.assert_close(halved, want, atol=1e-5, rtol=0)
    assert not torch.allclose(first, halved)
    replaced = (weights[0], weights[1] * 2, *weights[2:])  # a new tensor: not the old entry
    doubled = run_op("GRU", x, state, replaced, tx, th, False)[0]
    want = spec("GRU", x, state, replaced, tx, th, False)[0]
    torch.testing.assert_close(doubled, want, atol=1e-5, rtol=0)


def test_repeated_calls_follow_threshold_values_and_batch():
    # The cpu kernel keeps one prepared layer per packed weights and batch; thresholds are
    # compared by value at every call, so new values (same tensor, written in place) are used.
    x, state, weights, tx, th = make_case("LSTM", 3, 2, 4, 5)
    for theta in (3 / 16, 3 / 16, 5 / 16, 1 / 16):
        tx.fill_(theta)
        th.fill_(theta / 4)
        got = run_op("LSTM", x, state, weights, tx, th, True)
        assert_same(got, spec("LSTM", x, state, weights, tx, th, True), torch.float32)
    x1, state1, *_ = make_case("LSTM", 2, 1, 4, 5, seed=1)  # another batch, same weights
    got = run_op("LSTM", x1, state1, weights, tx, th, False)
    assert_same(got, spec("LSTM", x1, state1, weights, tx, th, False), torch.float32)


def test_inference_tensors_are_packed_at_every_call():
    with torch.inference_mode():
        x, state, weights, tx, th = make_case("LSTM", 3, 2, 4, 5)
        run_op("LSTM", x, state, weights, tx, th, False)
        weights[0].mul_(-1)  # an inference tensor has no version counter to notice this by
        got = run_op("LSTM", x, state, weights, tx, th, False)
        want = spec("LSTM", x, state, weights, tx, th, False)
    assert_same(got, want, torch.float32)


def test_cache_is_bounded():
    cache = custom_ops._PackedCache(size=2)
    weights = [(torch.randn(6, 2), torch.randn(6, 2)) for _ in range(4)]
    calls = []

    def pack(a, b):
        calls.append(1)
        return (a, b)

    for w in weights:
        cache.get(w, pack)
    assert len(cache._entries) == 2 and len(calls) == 4
    cache.get(weights[-1], pack)  # the newest entry is still there
    assert len(calls) == 4


def test_a_device_whose_kernel_module_is_missing_falls_back_to_the_spec(monkeypatch):
    monkeypatch.setitem(custom_ops.KERNEL_MODULES, "xpu", "deltarnn.ops.no_such_backend")
    monkeypatch.setattr(custom_ops, "_TRIED", set())
    layer = custom_ops.LAYERS["GRU"]
    assert custom_ops._load_kernel_module("xpu", layer) is False  # ImportError: the spec runs
    assert custom_ops._TRIED == {"xpu"}  # tried once, not at every call
    assert custom_ops._load_kernel_module("nodevice", layer) is False
