"""The triton backend against the functional spec: outputs, returned state and send counts.

The kernels run on the CPU under Triton's interpreter and, where a GPU is present, compiled on
CUDA. Triton picks interpreter or compiler when it is imported, so the interpreter runs cannot
share a process with the rest of the suite: ``test_interpreter_subprocess`` reruns this file with
``TRITON_INTERPRET=1`` (run it directly with ``TRITON_INTERPRET=1 pytest <this file>``).

Inputs are on the binary grid k/8 and input thresholds at midpoints (3/16), so a rounding
difference cannot flip a mask bit of the input side; hidden thresholds are compared on fixed seeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

pytest.importorskip("triton")

from deltarnn import functional as F  # noqa: E402
from deltarnn.errors import BackendError, ConfigError, DTypeError, ShapeError  # noqa: E402
from deltarnn.ops import select_backend, triton_common  # noqa: E402
from deltarnn.ops import triton as tb  # noqa: E402
from deltarnn.ops import triton_stream as tst  # noqa: E402

ATOL = 2e-5  # float32: a different summation order of the products
INTERPRETED = triton_common.interpret()


@pytest.fixture(
    params=[
        pytest.param(
            "cpu",
            marks=pytest.mark.skipif(not INTERPRETED, reason="run by test_interpreter_subprocess"),
        ),
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(INTERPRETED, reason="compiled kernels")],
        ),
    ]
)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.mark.skipif(INTERPRETED, reason="this process already interprets")
def test_interpreter_subprocess():
    """Every CPU case of this file, in a fresh process where Triton interprets the kernels."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu", __file__],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout.splitlines()[-1]


def grid(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(-8, 9, shape, generator=gen).float() / 8


def make_layer(
    kind: str, batch: int, inputs: int, hidden: int, seed: int = 0, scale: float | None = None
):
    """Weights, biases and a fresh state with a non-zero h0 (and c0).

    ``scale``: weights ~ N(0, scale²); default 0.4. Long runs use 1/√H (recurrent gain about 1),
    so that a rounding difference is not amplified step after step.
    """
    gen = torch.Generator().manual_seed(seed)
    gates = 3 if kind == "gru" else 4
    w_scale = 0.4 if scale is None else scale
    w_ih = torch.randn(gates * hidden, inputs, generator=gen) * w_scale
    w_hh = torch.randn(gates * hidden, hidden, generator=gen) * w_scale
    b_ih = torch.randn(gates * hidden, generator=gen) * 0.2
    b_hh = torch.randn(gates * hidden, generator=gen) * 0.2
    h0 = torch.randn(batch, hidden, generator=gen) * 0.5
    if kind == "gru":
        state = F.gru_initial_state(w_ih, b_ih, b_hh, batch, h0=h0)
    else:
        c0 = torch.randn(batch, hidden, generator=gen) * 0.5
        state = F.lstm_initial_state(w_ih, b_ih, b_hh, batch, h0=h0, c0=c0)
    return w_ih, w_hh, state, gen


def spec(kind: str):
    return F.delta_gru if kind == "gru" else F.delta_lstm


def to(state, device):
    return type(state)(*(t.to(device) for t in state))


def assert_same_run(expected, got, atol=ATOL):
    (out_e, state_e, counts_e), (out_g, state_g, counts_g) = expected, got
    torch.testing.assert_close(out_g.cpu(), out_e, atol=atol, rtol=0)
    assert type(state_g) is type(state_e)
    for name, e, g in zip(state_e._fields, state_e, state_g, strict=True):
        torch.testing.assert_close(g.cpu(), e, atol=atol, rtol=0, msg=f"state.{name}")
    if counts_e is not None:
        for name in ("nx", "nh", "ux", "uh"):
            assert torch.equal(getattr(counts_g, name).cpu(), getattr(counts_e, name)), name
        for name in ("abs_x", "abs_h"):
            torch.testing.assert_close(
                getattr(counts_g, name).cpu(), getattr(counts_e, name), atol=1e-4, rtol=0
            )


def run_both(kind, steps, batch, inputs, hidden, theta_x, theta_h, device, **kwargs):
    w_ih, w_hh, state, gen = make_layer(kind, batch, inputs, hidden)
    x = grid(gen, steps, batch, inputs)
    expected = spec(kind)(x, state, w_ih, w_hh, theta_x, theta_h, count=True)
    packed = tb.pack(w_ih.to(device), w_hh.to(device))
    got = tb.run_sequence(
        x.to(device),
        to(state, device),
        packed,
        torch.full((inputs,), theta_x, device=device),
        torch.full((hidden,), theta_h, device=device),
        count=True,
        **kwargs,
    )
    return expected, got


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("x_mode", ["dense", "sparse"])
@pytest.mark.parametrize("thetas", [(0.0, 0.0), (3 / 16, 0.1)])
@pytest.mark.parametrize(
    "shape", [(1, 1, 7, 33), (4, 3, 5, 7)], ids=["T1-B1-I7-H33", "T4-B3-I5-H7"]
)
def test_sequence_matches_spec(kind, x_mode, thetas, shape, device):
    expected, got = run_both(kind, *shape, *thetas, device, x_mode=x_mode)
    assert_same_run(expected, got)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("compact_h", [True, False], ids=["in-step", "kernel"])
def test_sequence_several_blocks(kind, compact_h, device):
    # H = 130 spans 9 unit blocks of 16 and two compaction blocks of 128 (not a multiple of
    # either); the hidden columns compacted inside each step program, or by the prepare kernel.
    config = tb.StepConfig(
        block_b=2, block_h=16, block_k=32, use_dot=False, block_c=128, compact_h=compact_h
    )
    expected, got = run_both(kind, 2, 2, 33, 130, 3 / 16, 0.05, device, config=config)
    assert_same_run(expected, got)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("x_mode", ["dense", "sparse"])
def test_dot_path_and_split_batch(kind, x_mode, device):
    # tl.dot tiles of 16 rows; B = 19 spans two batch blocks, which share units (atomic flags).
    config = tb.StepConfig(block_b=16, block_h=16, block_k=16, use_dot=True, block_c=64)
    expected, got = run_both(kind, 3, 19, 6, 20, 3 / 16, 0.1, device, config=config, x_mode=x_mode)
    assert_same_run(expected, got)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_skipped_columns_are_not_read(kind, device):
    """NaN weights in the columns that never send: a dense product would return NaN."""
    batch, inputs, hidden = 2, 6, 9
    w_ih, w_hh, state, gen = make_layer(kind, batch, inputs, hidden)
    x = grid(gen, 3, batch, inputs)
    x[:, :, 2] = 0.0  # input feature 2 never changes from x̂ = 0
    h0 = state.h.clone()
    h0[:, 4] = 0.0  # hidden unit 4 starts at ĥ = 0 and its threshold is never crossed
    state = state._replace(h=h0)
    theta_h = torch.full((hidden,), 0.1)
    theta_h[4] = 1e6
    expected = spec(kind)(x, state, w_ih, w_hh, 0.0, theta_h, count=True)
    w_ih_nan, w_hh_nan = w_ih.clone(), w_hh.clone()
    w_ih_nan[:, 2] = float("nan")
    w_hh_nan[:, 4] = float("nan")
    got = tb.run_sequence(
        x.to(device),
        to(state, device),
        tb.pack(w_ih_nan.to(device), w_hh_nan.to(device)),
        torch.zeros(inputs, device=device),
        theta_h.to(device),
        count=True,
        x_mode="sparse",
    )
    assert torch.isfinite(got[0]).all()
    assert_same_run(expected, got)
    assert int(got[2].ux.max()) < inputs and int(got[2].uh.max()) < hidden


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_weights(kind, dtype, device):
    """fp16/bf16 weights and inputs, fp32 accumulation: judged against the fp32 spec run on the
    same (rounded) weights and inputs. Inputs of 8 + k/8 against x̂ = 0 give deltas and products
    that half precision cannot hold, so a rounding to half anywhere before the memories shows."""
    batch, inputs, hidden = 2, 6, 20
    w_ih, w_hh, state, gen = make_layer(kind, batch, inputs, hidden)
    w_ih, w_hh = w_ih.to(dtype), w_hh.to(dtype)
    x = grid(gen, 3, batch, inputs) + 8.0
    x = x.to(dtype).float()
    expected = spec(kind)(x, state, w_ih.float(), w_hh.float(), 3 / 16, 0.0)
    for x_mode in ("dense", "sparse"):
        out, new_state, _ = tb.run_sequence(
            x.to(device, dtype),
            to(state, device),
            tb.pack(w_ih.to(device), w_hh.to(device)),
            torch.full((inputs,), 3 / 16, device=device),
            torch.zeros(hidden, device=device),
            x_mode=x_mode,
        )
        assert out.dtype == dtype
        # The output is rounded to the input dtype; the float32 state is not rounded at all:
        # deltas and products reach the memories in float32 (in both modes).
        torch.testing.assert_close(out.float().cpu(), expected[0], atol=1e-2, rtol=0)
        torch.testing.assert_close(new_state.m.cpu(), expected[1].m, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_streamer_matches_spec(kind, device):
    steps, batch, inputs, hidden = 4, 3, 5, 18
    w_ih, w_hh, state, gen = make_layer(kind, batch, inputs, hidden)
    x = grid(gen, steps, batch, inputs)
    out_e, state_e, _ = spec(kind)(x, state, w_ih, w_hh, 3 / 16, 0.1)
    streamer = tb.TritonStreamer(
        tb.pack(w_ih.to(device), w_hh.to(device)), to(state, device), 3 / 16, 0.1
    )
    outs = [streamer.step(x[t].to(device)).clone() for t in range(steps)]
    assert_same_run((out_e, state_e, None), (torch.stack(outs), streamer.state(), None))
    # reset() starts the same stream again, and two halves give the state of one pass.
    streamer.reset(to(state, device))
    for t in range(2):
        streamer.step(x[t].to(device))
    _, half_state, _ = spec(kind)(x[:2], state, w_ih, w_hh, 3 / 16, 0.1)
    assert_same_run((out_e[:0], half_state, None), (out_e[:0], streamer.state(), None))


def test_segments():
    """Graphed runs split T into power-of-two segments (few cached graphs for any length)."""
    assert list(triton_common.segments(5, False)) == [(0, 5)]
    assert list(triton_common.segments(13, True)) == [(0, 8), (8, 4), (12, 1)]
    assert list(triton_common.segments(600, True, longest=256)) == [
        (0, 256), (256, 256), (512, 64), (576, 16), (592, 8),
    ]  # fmt: skip
    for steps in range(1, 70):
        spans = list(triton_common.segments(steps, True, longest=16))
        assert sum(n for _, n in spans) == steps
        assert all(n & (n - 1) == 0 and n <= 16 for _, n in spans)
        assert [s for s, _ in spans] == [sum(n for _, n in spans[:i]) for i in range(len(spans))]


def test_segmented_run_matches_spec(device, monkeypatch):
    """A run in segments (what a graphed run does) equals the spec, counts concatenated."""
    monkeypatch.setattr(
        tb, "segments", lambda steps, graphed: triton_common.segments(steps, True, 2)
    )
    expected, got = run_both("lstm", 5, 2, 5, 9, 3 / 16, 0.1, device)
    assert_same_run(expected, got)


def test_versions_and_modes():
    assert triton_common.version_supported()
    low, high = triton_common.TRITON_RANGE
    assert low <= triton_common.triton_version() < high
    with pytest.raises(ConfigError, match="x_mode"):
        tb.run_sequence(
            torch.zeros(1, 1, 3), F.gru_initial_state(torch.zeros(6, 3), None, None, 1),
            tb.pack(torch.zeros(6, 3), torch.zeros(6, 2)), torch.zeros(3), torch.zeros(2),
            x_mode="gemm",
        )  # fmt: skip


def test_unsupported_triton_version(monkeypatch):
    monkeypatch.setattr(triton_common, "TRITON_RANGE", ((9, 0), (9, 1)))
    with pytest.raises(BackendError, match="supported range >=9.0,<9.1"):
        triton_common.kernels()
    assert not tb.is_available() or not (torch.cuda.is_available() or INTERPRETED)


def test_chunks_equal_one_pass(device):
    w_ih, w_hh, state, gen = make_layer("gru", 2, 5, 12)
    x = grid(gen, 5, 2, 5)
    packed = tb.pack(w_ih.to(device), w_hh.to(device))
    thx, thh = torch.full((5,), 3 / 16, device=device), torch.full((12,), 0.1, device=device)
    out, final, _ = tb.run_sequence(x.to(device), to(state, device), packed, thx, thh)
    out_a, mid, _ = tb.run_sequence(x[:2].to(device), to(state, device), packed, thx, thh)
    out_b, final_b, _ = tb.run_sequence(x[2:].to(device), mid, packed, thx, thh)
    torch.testing.assert_close(torch.cat((out_a, out_b)), out, atol=ATOL, rtol=0)
    for a, b in zip(final, final_b, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    # The cached run of the first shape is reused and gives the same answer again.
    again, _, _ = tb.run_sequence(x.to(device), to(state, device), packed, thx, thh)
    assert torch.equal(again, out)


def test_backend_contract(device):
    w_ih, w_hh, state, gen = make_layer("lstm", 2, 4, 8)
    x = grid(gen, 3, 2, 4)
    packed = tb.pack(w_ih.to(device), w_hh.to(device))
    expected = F.delta_lstm(x, state, w_ih, w_hh, 3 / 16, 0.1, count=True)
    got = tb.lstm(
        x.to(device),
        to(state, device),
        packed,
        torch.full((4,), 3 / 16, device=device),
        torch.full((8,), 0.1, device=device),
        count=True,
    )
    assert_same_run(expected, got)
    start = to(state, device)
    empty, same_state, counts = tb.lstm(
        x[:0].to(device), start, packed, torch.zeros(4), torch.zeros(8), count=True
    )
    assert empty.shape == (0, 2, 8) and counts.nx.shape == (0, 2)
    assert same_state is start
    with pytest.raises(ShapeError, match="gates"):
        tb.gru(x.to(device), to(state, device), packed, torch.zeros(4), torch.zeros(8))


def test_supports_cpu_only_when_interpreted(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not tb.supports(torch.device("cpu"), torch.float32, False)
    assert select_backend("auto", torch.device("cpu"), torch.float32, False).NAME != "triton"
    if not torch.cuda.is_available():
        assert not tb.is_available()
    if INTERPRETED:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert tb.is_available()
        assert tb.supports(torch.device("cpu"), torch.float32, False)
        assert tb.supports(torch.device("cpu"), torch.bfloat16, False)
        assert not tb.supports(torch.device("cpu"), torch.float64, False)
        assert not tb.supports(torch.device("cpu"), torch.float32, True)
    else:  # the variable alone, set after Triton was imported, does not make a CPU backend
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert not tb.supports(torch.device("cpu"), torch.float32, False)


def test_pack_errors():
    with pytest.raises(ShapeError, match="weight_hh"):
        tb.pack(torch.zeros(12, 3), torch.zeros(10, 4))
    with pytest.raises(ShapeError, match="2-D"):
        tb.pack(torch.zeros(12), torch.zeros(12, 4))
    with pytest.raises(DTypeError, match="float64"):
        tb.pack(torch.zeros(12, 3, dtype=torch.float64), torch.zeros(12, 4, dtype=torch.float64))


def long_case():
    """The long GPU case: 1/√H weights and Θh = 0, so that no send decision of the hidden side
    hangs on a rounding (a change of h is either exactly 0 or far above rounding)."""
    w_ih, w_hh, state, gen = make_layer("gru", 1, 64, 256, scale=256**-0.5)
    x = grid(gen, 50, 1, 64)
    return w_ih, w_hh, state, x, 3 / 16, 0.0


def test_long_case_is_well_conditioned():
    """The long case gives the same counts, and outputs within the GPU test's tolerance, when the
    rounding changes (float32 against float64): a kernel's summation order cannot flip it."""
    w_ih, w_hh, state, x, theta_x, theta_h = long_case()
    f32 = F.delta_gru(x, state, w_ih, w_hh, theta_x, theta_h, count=True)
    f64 = F.delta_gru(
        x.double(), type(state)(*(t.double() for t in state)), w_ih.double(), w_hh.double(),
        theta_x, theta_h, count=True,
    )  # fmt: skip
    for name in ("nx", "nh", "ux", "uh"):
        assert torch.equal(getattr(f32[2], name), getattr(f64[2], name)), name
    torch.testing.assert_close(f32[0], f64[0].float(), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(INTERPRETED, reason="compiled kernels")
def test_gpu_graph_replay_long_sequence(cuda_device):
    """A longer run on the GPU through the captured graph, repeated: same answer as the spec."""
    w_ih, w_hh, state, x, theta_x, theta_h = long_case()
    expected = F.delta_gru(x, state, w_ih, w_hh, theta_x, theta_h, count=True)
    packed = tb.pack(w_ih.to(cuda_device), w_hh.to(cuda_device))
    thx = torch.full((64,), theta_x, device=cuda_device)
    thh = torch.full((256,), theta_h, device=cuda_device)
    for _ in range(2):
        got = tb.run_sequence(
            x.to(cuda_device), to(state, cuda_device), packed, thx, thh, count=True
        )
        assert_same_run(expected, got, atol=1e-4)


@pytest.mark.skipif(not INTERPRETED, reason="run by test_interpreter_subprocess")
def test_gpu_smoke_script_runs_interpreted(capsys):
    """benchmarks/gpu_smoke.py, the first stage of the GPU check, passes on the CPU (its CUDA-only
    stages skip): a GPU session does not discover a broken smoke script."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import gpu_smoke

    assert gpu_smoke.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")]
    assert sum(line.startswith("ok ") for line in lines) >= 10


class Layer(NamedTuple):
    """The fields a stack streamer reads of a layer (the backend protocol's layer parameters)."""

    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
    bias_ih: torch.Tensor | None
    bias_hh: torch.Tensor | None
    theta_x: torch.Tensor
    theta_h: torch.Tensor


def make_stack(kind: str, depth: int, batch: int, sizes=(5, 9, 7, 6)):
    layers, states = [], []
    for k in range(depth):
        w_ih, w_hh, state, _ = make_layer(kind.lower(), batch, sizes[k], sizes[k + 1], seed=k)
        theta_x = torch.full((sizes[k],), 3 / 16 if k == 0 else 0.05)
        layers.append(Layer(w_ih, w_hh, None, None, theta_x, torch.full((sizes[k + 1],), 0.1)))
        states.append(state)
    return layers, tuple(states)


def spec_stack(kind, layers, states, frame):
    """One frame through the stack by the spec: (h of the last layer, states, counts)."""
    x, new_states, counts = frame[None], [], []
    for params, s in zip(layers, states, strict=True):
        x, s, c = spec(kind.lower())(
            x, s, params.weight_ih, params.weight_hh, params.theta_x, params.theta_h, count=True
        )
        new_states.append(s)
        counts.append(c)
    return x[0], tuple(new_states), counts


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize("depth,batch", [(1, 1), (2, 3), (3, 1)])
def test_stack_streamer_matches_spec(kind, depth, batch, device):
    """Every step: the last layer's h, every layer's state and counts equal the spec run layer
    after layer with T = 1; load_state() resumes from a state() taken mid-stream."""
    layers, states = make_stack(kind, depth, batch)
    frames = grid(torch.Generator().manual_seed(9), 4, batch, layers[0].weight_ih.shape[1])
    moved = [Layer(*(t if t is None else t.to(device) for t in p)) for p in layers]
    streamer = tst.StackStreamer(kind, moved, tuple(to(s, device) for s in states), count=True)
    assert streamer.batch_size == batch
    expected_states, saved = states, None
    for t, frame in enumerate(frames):
        h_e, expected_states, counts_e = spec_stack(kind, layers, expected_states, frame)
        out = torch.empty_like(h_e).to(device)
        assert streamer.step(frame.to(device), out=out) is out
        torch.testing.assert_close(out.cpu(), h_e, atol=ATOL, rtol=0)
        for k, (s_e, s_g, c_e, c_g) in enumerate(
            zip(expected_states, streamer.state(), counts_e, streamer.counts(), strict=True)
        ):
            assert_same_run((h_e[:0], s_e, c_e), (h_e[:0], s_g, c_g))
            assert c_g.nx.shape == (1, batch), k
        if t == 1:
            saved, saved_expected = streamer.state(), expected_states
    streamer.load_state(saved)
    h_e, _, _ = spec_stack(kind, layers, saved_expected, frames[2])
    torch.testing.assert_close(streamer.step(frames[2].to(device)).cpu(), h_e, atol=ATOL, rtol=0)


def test_stack_streamer_errors(device):
    layers, states = make_stack("GRU", 2, 1)
    moved = [Layer(*(t if t is None else t.to(device) for t in p)) for p in layers]
    states = tuple(to(s, device) for s in states)
    with pytest.raises(ConfigError, match="kind"):
        tst.StackStreamer("RNN", moved, states)
    with pytest.raises(BackendError, match="8-bit"):
        tst.StackStreamer("GRU", moved, states, weights="int8")
    with pytest.raises(ShapeError, match="state must be a tuple of 2"):
        tst.StackStreamer("GRU", moved, states[:1])
    with pytest.raises(ShapeError, match="must be a DeltaLSTMState"):
        tst.StackStreamer("LSTM", moved, states)
    streamer = tst.StackStreamer("GRU", moved, states)
    with pytest.raises(ShapeError, match=r"\(1, 5\)"):
        streamer.step(torch.zeros(2, 5, device=device))
    with pytest.raises(DTypeError, match="float32"):
        streamer.step(torch.zeros(1, 5, dtype=torch.float64, device=device))
    with pytest.raises(BackendError, match="count=True"):
        streamer.counts()
    with pytest.raises(BackendError, match="resync_every must be 0"):
        tst.StackStreamer("GRU", moved, states, resync_every=1024)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("x_mode", ["dense", "sparse"])
def test_dense_hidden_product(kind, x_mode, device):
    """Large batches: the hidden product as one dense product (cuBLAS on a GPU) gives the spec's
    run, in a sequence and in the streamer; step_config picks it from DENSE_H_BATCH rows on."""
    assert tb.step_config(tb.DENSE_H_BATCH, 2048).dense_h
    assert not tb.step_config(tb.DENSE_H_BATCH - 1, 2048).dense_h
    config = tb.StepConfig(block_b=16, block_h=16, block_k=16, use_dot=True, dense_h=True)
    expected, got = run_both(kind, 3, 17, 6, 20, 3 / 16, 0.1, device, config=config, x_mode=x_mode)
    assert_same_run(expected, got)


def test_dense_hidden_product_streamer_half(device):
    batch, inputs, hidden = 17, 5, 18
    w_ih, w_hh, state, gen = make_layer("gru", batch, inputs, hidden)
    x = grid(gen, 3, batch, inputs)
    w_ih, w_hh = w_ih.half(), w_hh.half()
    out_e, state_e, _ = F.delta_gru(x, state, w_ih.float(), w_hh.float(), 3 / 16, 0.1)
    config = tb.StepConfig(block_b=16, block_h=16, block_k=16, use_dot=True, dense_h=True)
    streamer = tb.TritonStreamer(
        tb.pack(w_ih.to(device), w_hh.to(device)), to(state, device), 3 / 16, 0.1, config=config
    )
    outs = torch.stack([streamer.step(x[t].to(device)).clone() for t in range(3)])
    assert_same_run((out_e, state_e, None), (outs, streamer.state(), None))


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize("count", [True, False])
def test_custom_op_kernel_matches_spec(kind, count, device):
    """The operator kernel this backend registers for CUDA (run here on the device fixture's
    tensors): outputs, state and counts of the spec, in the operator's schema, no output aliasing
    an input; registered for the CUDA dispatch key as soon as the backend is imported."""
    from deltarnn.ops import custom_ops, triton_custom_ops

    layer = custom_ops.LAYERS[kind]
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"deltarnn::{layer.name}", "CUDA")
    w_ih, w_hh, state, gen = make_layer(kind.lower(), 3, 5, 9)
    x = grid(gen, 4, 3, 5)
    theta_x, theta_h = torch.full((5,), 3 / 16), torch.full((9,), 0.1)
    expected = layer.spec(x, state, w_ih, w_hh, theta_x, theta_h, count=True)
    # Schema order: x, state, weights, biases (None: the state was built with them, and the
    # re-sync does not fire on these values), thresholds, count, resync_every.
    args = [t.to(device) for t in (x, *state, w_ih, w_hh)]
    args += [None, None, theta_x.to(device), theta_h.to(device)]
    outs = triton_custom_ops.KERNELS[kind](*args, count, 0)
    fields = len(layer.state_type._fields)
    got_state = layer.state_type(*outs[1 : 1 + fields])
    counts = outs[1 + fields :]
    if count:
        assert_same_run(expected, (outs[0], got_state, F.DeltaCounts(*counts)))
    else:
        assert_same_run((expected[0], expected[1], None), (outs[0], got_state, None))
        assert [tuple(c.shape) for c in counts] == [(0, 3), (0, 3), (0,), (0,), (0, 3), (0, 3)]
    given = [t for t in args if t is not None]
    inputs = {t.data_ptr() for t in given}
    assert not any(t.data_ptr() in inputs for t in outs if t.numel())
    empty = triton_custom_ops.KERNELS[kind](args[0][:0], *args[1:], count, 0)
    assert empty[0].shape == (0, 3, 9)
    assert not any(a.data_ptr() == b.data_ptr() for a, b in zip(empty[1:], given[1:], strict=False))
