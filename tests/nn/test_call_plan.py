"""Repeated one-frame calls (``stream`` at T = 1, the cells) against the functional spec.

These calls reuse a per-module plan (packed weights, converted thresholds, buffers); the tests
check that the results equal the spec frame after frame, that the caller's state is never
modified, that a change of weights or thresholds is picked up at the next call, and that every
module runs under ``torch.no_grad()`` and ``torch.inference_mode()`` whether it was built
inside or outside them. Inputs are on the k/8 grid with Θx at a midpoint (3/16), so the input
masks cannot differ by rounding; float64 makes the hidden side agree as well.
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

import deltarnn
from deltarnn import functional as F
from deltarnn.errors import DTypeError, ShapeError
from deltarnn.ops import load_backend

pytestmark = pytest.mark.skipif(load_backend("cpu") is None, reason="needs numba")

THETA = {"theta_x": 3 / 16, "theta_h": 0.05}
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
MODES = {
    "plain": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def frames(steps, batch, features, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    moves = torch.randint(-2, 3, (steps, batch, features), generator=gen) / 8
    moves[torch.rand(steps, batch, features, generator=gen) < 0.5] = 0
    return torch.cumsum(moves, dim=0).to(dtype)


def make(kind, layers=2, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cls = deltarnn.DeltaGRU if kind == "GRU" else deltarnn.DeltaLSTM
    return cls(5, 7, num_layers=layers, dtype=dtype, **THETA, **kw).eval()


def make_cell(kind, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cls = deltarnn.DeltaGRUCell if kind == "GRU" else deltarnn.DeltaLSTMCell
    return cls(5, 7, dtype=dtype, **THETA, **kw).eval()


def spec_step(module, x, state, count=False):
    """Every layer of ``module`` over x (T, B, I) by the functional spec."""
    run = F.delta_gru if module.mode == "GRU" else F.delta_lstm
    new, counts = [], []
    with torch.no_grad():
        for k in range(module.num_layers):
            w_ih, w_hh, b_ih, b_hh = (
                None if w is None else w.detach().clone() for w in module.layer_weights(k)
            )
            tx, th = (t.clone() for t in module.thresholds(k))
            x, s, c = run(x, state[k], w_ih, w_hh, tx, th, bias_ih=b_ih, bias_hh=b_hh, count=count)
            new.append(s)
            counts.append(c)
    return x, tuple(new), counts


def assert_states_close(got, want, dtype):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert type(a) is type(b)
        for field, u, v in zip(a._fields, a, b, strict=True):
            torch.testing.assert_close(u, v, atol=TOL[dtype], rtol=TOL[dtype], msg=field)


def snapshot(state):
    return [tuple(t.clone() for t in s) for s in state]


def assert_unchanged(state, before):
    for s, saved in zip(state, before, strict=True):
        for t, u in zip(s, saved, strict=True):
            assert torch.equal(t, u)


# -- stream at T = 1 ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layers,batch", [(1, 1), (2, 3), (3, 1)])
def test_stream_frame_by_frame_equals_spec(kind, dtype, layers, batch):
    model = make(kind, layers, dtype)
    xs = frames(12, batch, 5, dtype)
    state = want_state = model.initial_state(batch)
    with torch.no_grad():
        for t in range(xs.shape[0]):
            before = snapshot(state)
            out, new_state = model.stream(xs[t : t + 1], state)
            want, want_state, _ = spec_step(model, xs[t : t + 1], want_state)
            torch.testing.assert_close(out, want, atol=TOL[dtype], rtol=TOL[dtype])
            assert_states_close(new_state, want_state, dtype)
            assert_unchanged(state, before)  # the caller's state is never written
            state = new_state
    assert model.last_backend == "cpu"
    assert list(model._plans) == [batch]  # one plan, reused for every frame


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_stream_layouts_and_counts(kind):
    model = make(kind, 2)
    xs = frames(6, 1, 5, torch.float64)
    unbatched = first = model.initial_state(1)
    reference = deltarnn.DeltaGRU if kind == "GRU" else deltarnn.DeltaLSTM
    torch.manual_seed(0)
    wide = reference(5, 7, num_layers=2, batch_first=True, dtype=torch.float64, **THETA).eval()
    wide.load_state_dict(model.state_dict())
    with torch.inference_mode():
        for t in range(xs.shape[0]):
            out, new, counts = model.stream(xs[t : t + 1], first, count=True)
            want, _, want_counts = spec_step(model, xs[t : t + 1], first, count=True)
            torch.testing.assert_close(out, want)
            for c, w in zip(counts, want_counts, strict=True):
                for name in ("nx", "nh", "ux", "uh"):
                    assert torch.equal(getattr(c, name), getattr(w, name)), name
            out_u, unbatched = model.stream(xs[t], unbatched)  # (1, I): unbatched
            assert out_u.shape == (1, 7)
            torch.testing.assert_close(out_u, want[:, 0])
            out_b, _ = wide.stream(xs[t : t + 1].transpose(0, 1), first)  # (B, 1, I)
            assert out_b.shape == (1, 1, 7)
            torch.testing.assert_close(out_b, want.transpose(0, 1))
            first = new


def test_an_older_state_and_a_written_state_are_read_as_they_are():
    model = make("GRU", 2)
    xs = frames(4, 2, 5, torch.float64)
    with torch.no_grad():
        s0 = model.initial_state(2)
        _, s1 = model.stream(xs[0:1], s0)
        _, s2 = model.stream(xs[1:2], s1)
        # branch from the older s1 again: the result depends only on s1
        out, s2_again = model.stream(xs[1:2], s1)
        assert_states_close(s2_again, s2, torch.float64)
        # values written into the returned state are what the next call starts from
        s2[0].h.mul_(0.5)
        s2[1].m.add_(0.25)
        out, _ = model.stream(xs[2:3], s2)
        want, _, _ = spec_step(model, xs[2:3], s2)
        torch.testing.assert_close(out, want)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_a_fresh_stream_starts_by_the_plan_from_the_initial_state(kind):
    # state=None (a stream's first frame) takes the plan too, from the state the plan's engine
    # was built with: equal to the spec from initial_state(), a new state each time, and
    # biases changed in between picked up (the plan, and its initial state, are rebuilt).
    model = make(kind, 2)
    cell = make_cell(kind)
    xs = frames(3, 3, 5, torch.float64)
    with torch.no_grad():
        for t in range(2):
            out, state, counts = model.stream(xs[t : t + 1], None, count=True)
            want, want_state, want_counts = spec_step(
                model, xs[t : t + 1], model.initial_state(3), count=True
            )
            torch.testing.assert_close(out, want)
            assert_states_close(state, want_state, torch.float64)
            assert torch.equal(counts[1].nh, want_counts[1].nh)
            state[0].m.add_(1.0)  # nothing the next fresh stream starts from
            h, cell_state = cell(xs[t], None)
            want, (want_cell,), _ = spec_step(cell, xs[t : t + 1], cell.initial_state(3))
            torch.testing.assert_close(h, want[0])
            assert_states_close((cell_state,), (want_cell,), torch.float64)
            cell_state.h.zero_()
            model.bias_hh_l1.add_(0.5)
            cell.bias_ih.add_(0.5)
        assert model.last_backend == cell.last_backend == "cpu"
        # the fresh call runs the plan's engine, which copies no state in (no checks, no copies)
        model.stream(xs[2:3], None)  # the plan of the changed biases
        engine, seen = model._plans[3].engine, []
        advance, write = engine.advance, engine._write_state
        engine.advance = lambda frame, s, *a, **k: seen.append(s) or advance(frame, s, *a, **k)
        engine._write_state = lambda s: seen.append("copied in") or write(s)
        model.stream(xs[2:3], None)
        assert seen == [None]


def test_engine_advance_from_its_initial_state_keeps_resync_counters():
    # The stack streamer's advance(None) (a fresh stream) with a re-sync period equals
    # advance(the state it was built with): outputs, states and since_sync counters.
    from deltarnn.ops.cpu_stream import StackStreamer

    model = make("GRU", 2)
    xs = frames(4, 2, 5, torch.float64)
    with torch.no_grad():
        layers = [
            deltarnn.ops.LayerParams(*model.layer_weights(k), *model.thresholds(k))
            for k in range(2)
        ]
        initial = model.initial_state(2)
        engine = StackStreamer("GRU", layers, initial, resync_every=3)
        out_a, out_b = (torch.empty(2, 7, dtype=torch.float64) for _ in range(2))
        fresh, _ = engine.advance(xs[0], None, out_a)
        given, _ = engine.advance(xs[0], initial, out_b)
        torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)
        for a, b in zip(fresh, given, strict=True):
            for u, v in zip(a, b, strict=True):
                assert torch.equal(u, v)
        assert fresh[0].since_sync.shape == (2,)
        assert all(a is not b for a, b in zip(fresh[0], initial[0], strict=True))


def test_changed_weights_and_thresholds_are_picked_up_at_the_next_call():
    model = make("LSTM", 2)
    xs = frames(8, 1, 5, torch.float64)
    with torch.no_grad():
        state = model.initial_state(1)
        changes = [
            lambda: model.weight_hh_l1.mul_(0.5),  # in place
            lambda: model.set_thresholds(theta_h=0.2),  # a new buffer
            lambda: model.theta_x_l0.fill_(1 / 16),  # a threshold in place
            lambda: setattr(model, "bias_ih_l0", torch.nn.Parameter(model.bias_ih_l0 + 1)),
            lambda: model.load_state_dict(make("LSTM", 2).state_dict() | {}),
        ]
        for t in range(xs.shape[0]):
            if t < len(changes):
                changes[t]()
            out, new = model.stream(xs[t : t + 1], state)
            want, _, _ = spec_step(model, xs[t : t + 1], state)
            torch.testing.assert_close(out, want)
            state = new


def test_threads_sharing_a_module_each_get_their_own_stream():
    model = make("GRU", 2)
    xs = [frames(40, 1, 5, torch.float64, seed=s) for s in range(3)]
    results = {}

    def run(i):
        with torch.no_grad():
            state, outs = model.initial_state(1), []
            for t in range(xs[i].shape[0]):
                out, state = model.stream(xs[i][t : t + 1], state)
                outs.append(out)
            results[i] = torch.cat(outs)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in range(3):
        want, _, _ = spec_step(model, xs[i], model.initial_state(1))
        torch.testing.assert_close(results[i], want)


def test_bad_frames_and_states_in_a_stream_still_get_specific_errors():
    model = make("GRU", 2)
    xs = frames(2, 1, 5, torch.float64)
    with torch.no_grad():
        _, state = model.stream(xs[0:1], model.initial_state(1))
        with pytest.raises(DTypeError, match="dtype"):
            model.stream(xs[1:2].float(), state)
        with pytest.raises(ShapeError, match="input_size=5"):
            model.stream(torch.zeros(1, 1, 4, dtype=torch.float64), state)
        wrong = (state[0]._replace(h=torch.zeros(1, 6, dtype=torch.float64)), state[1])
        with pytest.raises(ShapeError, match=r"state\[0\].h"):
            model.stream(xs[1:2], wrong)
        with pytest.raises(ShapeError, match="state must be a tuple"):
            model.stream(xs[1:2], state[:1])


# -- cells ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3, None])
def test_cell_called_per_frame_equals_spec(kind, dtype, batch):
    cell = make_cell(kind, dtype)
    xs = frames(10, batch or 1, 5, dtype)
    state = want_state = cell.initial_state(batch or 1)[0]
    with torch.no_grad():
        for t in range(xs.shape[0]):
            x = xs[t] if batch else xs[t, 0]
            before = snapshot([state])
            h, new_state = cell(x, state)
            want, (want_state,), _ = spec_step(cell, xs[t : t + 1], (want_state,))
            torch.testing.assert_close(h, want[0] if batch else want[0, 0])
            assert_states_close((new_state,), (want_state,), dtype)
            assert_unchanged([state], before)
            state = new_state
    assert cell.last_backend == "cpu"


# -- no_grad / inference_mode ---------------------------------------------------------------


@pytest.mark.parametrize("built", list(MODES))
@pytest.mark.parametrize("ran", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("module", ["DeltaGRU", "DeltaLSTM", "DeltaGRUCell", "DeltaLSTMCell"])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_modules_run_under_no_grad_and_inference_mode(built, ran, module, backend):
    kind = "GRU" if "GRU" in module else "LSTM"
    with MODES[built]():
        if module.endswith("Cell"):
            model = make_cell(kind, torch.float32, backend=backend)
        else:
            model = make(kind, 2, torch.float32, backend=backend)
    xs = frames(5, 2, 5, torch.float32)
    with MODES[ran]():
        state = model.initial_state(2)
        want, want_state, _ = spec_step(model, xs, state)
        if module.endswith("Cell"):
            (s,) = state
            outs = []
            for t in range(xs.shape[0]):
                h, s = model(xs[t], s)
                outs.append(h)
            got, got_state = torch.stack(outs), (s,)
        else:
            got, _ = model(xs)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            for t in range(xs.shape[0]):  # and frame by frame
                out, state = model.stream(xs[t : t + 1], state)
            got, got_state = out, state
            want = want[-1:]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert_states_close(got_state, want_state, torch.float32)
        # a write to the weights inside inference mode is seen by the next call
        with torch.inference_mode():
            model.layer_weights(0)[1].mul_(-1)
        x = xs[0] if module.endswith("Cell") else xs[:1]
        got = model(x, got_state[0]) if module.endswith("Cell") else model.stream(x, got_state)
        want, _, _ = spec_step(model, xs[:1], got_state)
        torch.testing.assert_close(got[0], want[0] if module.endswith("Cell") else want)
    assert model.last_backend == backend


def test_copies_and_conversions_of_a_streaming_module():
    # A copy or pickle starts without plans (they hold a lock and the original's arrays); a
    # conversion to float64 re-points every parameter, so the next call builds a new plan.
    import copy
    import io

    model = make("GRU", 2, torch.float32)
    xs = frames(3, 1, 5, torch.float32)
    with torch.no_grad():
        _, state = model.stream(xs[0:1], model.initial_state(1))
        twin = copy.deepcopy(model)
        torch.save(model, io.BytesIO())
        assert len(twin._plans) == 0 and len(model._plans) == 1
        out, _ = model.stream(xs[1:2], state)
        assert torch.equal(twin.stream(xs[1:2], state)[0], out)
        model.double()
        wide = tuple(
            type(s)(*(f.double() if f.is_floating_point() else f for f in s)) for s in state
        )
        got, _ = model.stream(xs[1:2].double(), wide)
        want, _, _ = spec_step(model, xs[1:2].double(), wide)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got.float(), out, atol=1e-5, rtol=1e-5)
