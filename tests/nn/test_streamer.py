"""module.streamer(): the whole stack one frame per call, equal to stream() and to the spec."""

from __future__ import annotations

import gc
import math
import tracemalloc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from deltarnn import (
    BackendError,
    ConfigError,
    DeltaGRU,
    DeltaGRUCell,
    DeltaLSTM,
    DeltaLSTMCell,
    DTypeError,
    ShapeError,
    StaleError,
    Streamer,
)
from deltarnn import functional as F
from deltarnn.ops import available_backends, load_backend

CPU = torch.device("cpu")
MODULES = {"GRU": DeltaGRU, "LSTM": DeltaLSTM}
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


def streamer_backends(dtype=torch.float32) -> list[str]:
    """The backends here that have a stack streamer for CPU tensors of ``dtype``."""
    return [
        name
        for name in available_backends()
        if hasattr(load_backend(name), "StackStreamer")
        and load_backend(name).supports(CPU, dtype, False)
    ]


def frames(steps: int, batch: int, features: int, dtype, awkward: bool = True) -> torch.Tensor:
    """A slowly moving signal (T, B, I), with a huge, an infinite and a NaN value near the end."""
    g = torch.Generator().manual_seed(1)
    x = torch.cumsum(0.08 * torch.randn(steps, batch, features, generator=g), 0).to(dtype)
    if awkward:
        x[steps - 9, 0, 0] = 1e30
        x[steps - 6, -1, features - 1] = math.inf
        x[steps - 3, 0, features // 2] = math.nan
    return x


def make(kind, layers, dtype, backend="auto", inputs=5, hidden=7, theta=0.05, **kw):
    torch.manual_seed(0)
    module = MODULES[kind](
        inputs, hidden, layers, dtype=dtype, theta_x=theta, theta_h=theta, backend=backend, **kw
    )
    return module.eval().requires_grad_(False)


def assert_same(a, b, tol):
    """Tensors, states or counts equal to ``tol`` (NaN where the other is NaN)."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b.to(a.dtype), atol=tol, rtol=tol, equal_nan=True)
    elif a is None or b is None:
        assert a is None and b is None
    else:
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y, tol)


def spec_stream(module, x, resync_every):
    """The oracle: the functional spec, layer after layer, frame by frame."""
    run = F.delta_gru if module.mode == "GRU" else F.delta_lstm
    state = module.initial_state(x.shape[1])
    outs, counts = [], []
    for frame in x:
        h, new, cs = frame[None], [], []
        for k in range(module.num_layers):
            w_ih, w_hh, b_ih, b_hh = module.layer_weights(k)
            h, s, c = run(
                h, state[k], w_ih, w_hh, *module.thresholds(k), bias_ih=b_ih, bias_hh=b_hh,
                resync_every=resync_every, count=True,
            )  # fmt: skip
            new.append(s)
            cs.append(c)
        state = tuple(new)
        outs.append(h[0])
        counts.append(cs)
    return torch.stack(outs), state, counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_streamer_equals_stream(kind, layers, batch, dtype):
    """Outputs, states and counts, every backend, through huge, infinite and NaN frames."""
    x = frames(30, batch, 5, dtype)
    for backend in streamer_backends(dtype):
        module = make(kind, layers, dtype, backend=backend)
        streamer = module.streamer(batch, count=True, backend=backend, resync_every=0)
        assert streamer.backend == backend
        state = None
        for t, frame in enumerate(x):
            out, state, counts = module.stream(frame[None], state, count=True)
            assert module.last_backend == backend
            h = streamer.step(frame)
            assert h.shape == (batch, 7) and h.dtype == dtype
            assert_same(h, out[0], TOL[dtype])
            assert_same(streamer.counts(), counts, TOL[dtype])
            assert streamer.steps == t + 1
        assert_same(streamer.state(), state, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_streamer_resyncs_as_the_spec(kind, dtype):
    """A short re-sync period: every backend equals the spec, ``since_sync`` included."""
    x = frames(20, 3, 5, dtype)
    for backend in streamer_backends(dtype):
        module = make(kind, 2, dtype)
        expected, state, counts = spec_stream(module, x, resync_every=3)
        streamer = module.streamer(3, count=True, backend=backend, resync_every=3)
        for t, frame in enumerate(x):
            assert_same(streamer.step(frame), expected[t], TOL[dtype])
            assert_same(streamer.counts(), counts[t], TOL[dtype])
        assert_same(streamer.state(), state, TOL[dtype])
        assert torch.equal(streamer.state()[0].since_sync, state[0].since_sync)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_resume_and_reset(kind):
    x = frames(24, 2, 5, torch.float64, awkward=False)
    for backend in streamer_backends(torch.float64):
        module = make(kind, 2, torch.float64, backend=backend)
        streamer = module.streamer(2, backend=backend, resync_every=0)
        first = torch.stack([streamer.step(f) for f in x[:12]])
        middle = streamer.state()
        rest = torch.stack([streamer.step(f) for f in x[12:]])
        # the state resumes with stream() and with another streamer
        out, _ = module.stream(x[12:], middle)
        assert_same(out, rest, 1e-10)
        other = module.streamer(2, middle, backend=backend, resync_every=0)
        assert_same(torch.stack([other.step(f) for f in x[12:]]), rest, 1e-10)
        # reset(): a fresh stream; reset(state): from that state
        streamer.reset()
        assert streamer.steps == 0
        assert_same(torch.stack([streamer.step(f) for f in x[:12]]), first, 0)
        streamer.reset(middle)
        assert_same(torch.stack([streamer.step(f) for f in x[12:]]), rest, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("resync_every", [0, 4])
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_reset_some_streams(kind, resync_every, dtype):
    """reset(streams=...) restarts those rows, fresh or from a saved one-row state, while the
    other rows go on; a 3-slot server against one streamer per stream."""
    x = frames(20, 3, 5, dtype, awkward=False)
    for backend in streamer_backends(dtype):
        module = make(kind, 2, dtype, backend=backend)

        def new(batch, module=module, backend=backend):
            return module.streamer(batch, backend=backend, resync_every=resync_every)

        served, whole, single = new(3), new(3), new(1)
        for f in x[:5]:
            single.step(f[1:2])
        saved = single.state()  # a stream of its own, 5 frames in
        for f in x[:8]:
            served.step(f)
            whole.step(f)
        served.reset(streams=[1])  # slot 1: a new stream begins
        fresh = new(1)
        for f in x[8:14]:
            h, w = served.step(f), whole.step(f)
            assert_same(h[[0, 2]], w[[0, 2]], TOL[dtype])
            assert_same(h[1:2], fresh.step(f[1:2]), TOL[dtype])
        served.reset(saved, streams=torch.tensor([2]))  # slot 2: the saved stream goes on
        for f in x[14:]:
            h, w = served.step(f), whole.step(f)
            assert_same(h[0], w[0], TOL[dtype])
            assert_same(h[1:2], fresh.step(f[1:2]), TOL[dtype])
            assert_same(h[2:3], single.step(f[2:3]), TOL[dtype])
        assert served.steps == 20
        state = served.state()
        assert_same(tuple(s._make(t[1:2] if t.dim() else t for t in s) for s in state),
                    fresh.state(), TOL[dtype])  # fmt: skip
        # a cell's streamer: one layer state, rows as well
        torch.manual_seed(0)
        cell = DeltaGRUCell(5, 7, theta_x=0.05, theta_h=0.05, dtype=dtype).eval()
        pair = cell.streamer(2, backend=backend, resync_every=resync_every)
        lone = cell.streamer(1, backend=backend, resync_every=resync_every)
        for f in x[:3, :2]:
            pair.step(f)
        pair.reset(streams=0)
        for f in x[3:6, :2]:
            assert_same(pair.step(f)[0:1], lone.step(f[0:1]), TOL[dtype])


def test_reset_streams_refuses_bad_rows():
    module = make("GRU", 2, torch.float32)
    streamer = module.streamer(3)
    one_row = module.streamer(1).state()
    for streams, match in [
        (3, r"in \[0, 3\)"),
        ([-1], r"in \[0, 3\)"),
        ([0, 0], "twice"),
        ([True], "each must be an int"),
        (1.0, "sequence of ints"),
        (torch.tensor([0.0]), "float32 tensor"),
        (torch.zeros(1, 1, dtype=torch.long), "1-D"),
    ]:
        with pytest.raises(ShapeError, match=match):
            streamer.reset(streams=streams)
    with pytest.raises(ShapeError):
        streamer.reset(one_row, streams=[0, 1])  # one row for two streams
    streamer.reset(one_row, streams=[1])  # one row for one stream


def test_out_is_filled_and_results_are_fresh():
    module = make("GRU", 2, torch.float32)
    streamer = module.streamer(2)
    x = frames(3, 2, 5, torch.float32, awkward=False)
    a = streamer.step(x[0])
    b = streamer.step(x[1])
    assert a.data_ptr() != b.data_ptr()  # the next step does not overwrite a result
    out = torch.empty(2, 7)
    reference = module.streamer(2)
    reference.step(x[0]), reference.step(x[1])
    assert streamer.step(x[2], out=out) is out
    assert_same(out, reference.step(x[2]), 0)
    strided = torch.empty(7, 2).t()  # not contiguous: filled through a copy
    streamer.reset(), reference.reset()
    assert streamer.step(x[0], out=strided) is strided
    assert_same(strided, reference.step(x[0]), 0)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_int8_equals_the_reference_int8_streamer(kind):
    x = frames(20, 3, 5, torch.float64)
    module = make(kind, 2, torch.float64)
    backends = streamer_backends(torch.float64)
    runs = {}
    for backend in backends:
        streamer = module.streamer(3, weights="int8", count=True, backend=backend)
        runs[backend] = [streamer.step(f) for f in x], streamer.state(), streamer.counts()
    for backend in backends:
        assert_same(runs[backend], runs["reference"], 1e-10)
    dense = module.streamer(3, backend="reference")
    float_out = torch.stack([dense.step(f) for f in x[:10]])
    int8_out = torch.stack(runs["reference"][0][:10])
    assert 0 < float(torch.nan_to_num(float_out - int8_out).abs().max()) < 0.05


@pytest.mark.skipif("cpu" not in streamer_backends(), reason="needs the cpu backend (numba)")
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_cpu_step_allocates_nothing(kind):
    """No buffer allocated per step (with ``out=``): a step's NumPy memory is its own buffers."""
    module = make(kind, 3, torch.float64, inputs=64, hidden=256)
    streamer = module.streamer(2, count=True, backend="cpu")
    x = list(frames(360, 2, 64, torch.float64, awkward=False))  # the frames' objects made here
    out = torch.empty(2, 256, dtype=torch.float64)
    # Warm up until CPython's free lists (lists, tuples: kept for reuse, never returned) hold
    # what a step's transient containers need; after that a step draws on them.
    for frame in x[:300]:
        streamer.step(frame, out=out)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for frame in x[300:]:
            streamer.step(frame, out=out)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one (2, 256) float64 array would be 4096 bytes; Python's per-call objects are a few hundred
    assert current - start < 512 and peak - start < 2048


def _outputs(streamer, x):
    return torch.stack([streamer.step(f) for f in x])


@pytest.mark.parametrize("context", [torch.inference_mode, torch.no_grad])
def test_built_inside_or_outside_inference_mode(context):
    x = frames(10, 1, 5, torch.float32, awkward=False)
    expected = _outputs(make("GRU", 2, torch.float32).streamer(backend="reference"), x)
    for backend in streamer_backends():
        with context():
            inside = make("GRU", 2, torch.float32)  # parameters are inference tensors
            streamer = inside.streamer(backend=backend)
        assert_same(_outputs(streamer, x), expected, 1e-5)
        with context():
            assert_same(_outputs(inside.streamer(backend=backend), x), expected, 1e-5)
        outside = make("GRU", 2, torch.float32).requires_grad_(True)
        with context():
            streamer = outside.streamer(backend=backend)
            assert_same(_outputs(streamer, x), expected, 1e-5)
        assert_same(_outputs(outside.streamer(backend=backend), x), expected, 1e-5)


def _replace_weight(m):
    m.weight_hh_l1 = nn.Parameter(m.weight_hh_l1.detach() + 1)


def _repoint_weight(m):
    m.weight_ih_l0.data = m.weight_ih_l0.detach() + 1


def _write_bias(m):
    with torch.no_grad():
        m.bias_hh_l1.add_(1)


def _load_state_dict(m):
    m.load_state_dict({k: v + 1 for k, v in m.state_dict().items()})


def _set_thresholds(m):
    m.set_thresholds(theta_h=[0.05, 0.2])


def _write_threshold(m):
    m.theta_x_l1.fill_(0.3)


def _install_transform(m):
    m.set_transforms(h_transform=lambda h, k: h)


@pytest.mark.parametrize(
    "change",
    [
        _replace_weight,
        _repoint_weight,
        _write_bias,
        _load_state_dict,
        _set_thresholds,
        _write_threshold,
        _install_transform,
    ],
)
def test_a_changed_module_is_never_served_stale(change):
    for backend in streamer_backends():
        module = make("GRU", 2, torch.float32)
        streamer = module.streamer(backend=backend)
        streamer.step(torch.zeros(1, 5))
        change(module)
        with pytest.raises(StaleError, match="changed after this streamer was built"):
            streamer.step(torch.zeros(1, 5))
        module.set_transforms()
        fresh = module.streamer(state=streamer.state(), backend=backend)  # picks the change up
        assert fresh.step(torch.zeros(1, 5)).shape == (1, 7)


def test_a_streamer_outlives_its_module_and_lets_its_weights_go():
    x = frames(20, 1, 5, torch.float32)
    for backend in streamer_backends():
        expected = _outputs(make("LSTM", 2, torch.float32).streamer(backend=backend), x)
        module = make("LSTM", 2, torch.float32)
        streamer = module.streamer(backend=backend)
        parameter, gone = weakref.ref(module.weight_hh_l1), weakref.ref(module)
        del module
        gc.collect()
        assert gone() is None  # the streamer does not keep its module alive
        got = _outputs(streamer, x)
        assert parameter() is None  # nor, after a step, the module's tensors
        assert_same(got, expected, 0.0)
        streamer.reset(streamer.state())  # states are still checked, with the module's rules
        with pytest.raises(ShapeError, match=r"state\[1\]\.m must have shape"):
            first, second = streamer.state()
            streamer.reset((first, second._replace(m=second.m[:, :3])))


@pytest.mark.skipif("cpu" not in streamer_backends(), reason="needs the cpu backend (numba)")
def test_cpu_streamers_and_plans_share_the_modules_packed_weights():
    """One packed copy of the weights for a module run over sequences, by a streamer and per
    frame (its plan), not one each."""
    module = make("LSTM", 2, torch.float32, backend="cpu")
    x = frames(4, 1, 5, torch.float32, awkward=False)
    module(x)  # packs the weights into the module's cache
    own = [module._packed[k][2] for k in range(2)]
    streamer = module.streamer(backend="cpu")
    module.stream(x[:1], module.initial_state(1))  # builds the module's one-frame plan
    for engine in (streamer._engine, module._plans[1].engine):
        for layer, packed in zip(engine._layers, own, strict=True):
            assert layer.packed is packed
    int8 = module.streamer(backend="cpu", weights="int8")  # its own 8-bit copy
    assert not np.shares_memory(int8._engine._layers[0].packed.wx, own[0].wx)


def _optimizer_step(params):
    with torch.no_grad():
        params[0].add_(1)


def _repoint(params):
    params[2].data = params[2].detach() + 1


@pytest.mark.parametrize("change", [_optimizer_step, _repoint])
def test_tensors_that_outlive_their_module_are_still_watched(change):
    for backend in streamer_backends():
        module = make("GRU", 2, torch.float32)
        streamer = module.streamer(backend=backend)
        held = list(module.parameters())  # as an optimizer holds them
        del module
        gc.collect()
        for _ in range(3):
            streamer.step(torch.zeros(1, 5))
        change(held)
        with pytest.raises(StaleError, match="changed after this streamer was built"):
            streamer.step(torch.zeros(1, 5))


def test_a_change_made_just_before_the_module_went_is_seen():
    for backend in streamer_backends():
        module = make("GRU", 2, torch.float32)
        streamer = module.streamer(backend=backend)
        _write_bias(module)
        del module
        gc.collect()
        with pytest.raises(StaleError, match="changed after this streamer was built"):
            streamer.step(torch.zeros(1, 5))


def test_refuses_transforms_and_training_dropout():
    module = make("GRU", 2, torch.float32)
    module.set_transforms(x_transform=lambda x, k: x)
    with pytest.raises(ConfigError, match="training transforms"):
        module.streamer()
    dropout = make("LSTM", 2, torch.float32, dropout=0.5).train()
    with pytest.raises(ConfigError, match="module.eval"):
        dropout.streamer()


def test_bad_frames_and_arguments():
    module = make("GRU", 2, torch.float32)
    streamer = module.streamer(2, backend="auto")
    with pytest.raises(ShapeError, match=r"\(2, 5\)"):
        streamer.step(torch.zeros(1, 5))
    with pytest.raises(ShapeError, match=r"\(2, 5\)"):
        streamer.step(torch.zeros(5))  # unbatched frames are a cell's
    with pytest.raises(DTypeError, match="float32"):
        streamer.step(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"out must be a tensor of shape \(2, 7\)"):
        streamer.step(torch.zeros(2, 5), out=torch.empty(1, 7))
    with pytest.raises(BackendError, match="count=True"):
        streamer.counts()
    with pytest.raises(ConfigError, match="weights must be"):
        module.streamer(weights="int4")
    with pytest.raises(ConfigError, match="batch_size"):
        module.streamer(0)
    with pytest.raises(ShapeError, match="state"):
        module.streamer(2, state=module.initial_state(3))


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_cells(kind):
    cell_type = DeltaGRUCell if kind == "GRU" else DeltaLSTMCell
    torch.manual_seed(0)
    cell = cell_type(5, 6, theta_x=0.05, theta_h=0.05).eval().requires_grad_(False)
    x = frames(15, 1, 5, torch.float64, awkward=False).float()
    for backend in streamer_backends():
        streamer = cell.streamer(count=True, backend=backend, resync_every=0)
        assert isinstance(streamer, Streamer)
        state = None
        for frame in x:
            h, state = cell(frame[0], state)
            got = streamer.step(frame[0])  # unbatched (I,) -> (H,)
            assert got.shape == (6,)
            assert_same(got, h, 2e-5)
        layer_state = streamer.state()
        assert isinstance(layer_state, F.DeltaLSTMState if kind == "LSTM" else F.DeltaGRUState)
        assert_same(layer_state, state, 2e-5)
        assert isinstance(streamer.counts(), F.DeltaCounts)
        resumed = cell.streamer(state=layer_state, backend=backend, resync_every=0)
        h, _ = cell(x[0], state)
        assert_same(resumed.step(x[0]), h, 2e-5)
        batched = cell.streamer(3, backend=backend)
        with pytest.raises(ShapeError, match="batch_size=1"):
            batched.step(torch.zeros(5))
