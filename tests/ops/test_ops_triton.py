"""The triton backend against the functional spec: outputs, returned state and send counts.

The kernels run on the CPU under Triton's interpreter and, where a GPU is present, compiled on
CUDA. Triton picks interpreter or compiler when it is imported, so the interpreter runs cannot
share a process with the rest of the suite: ``test_interpreter_subprocess`` reruns this file with
``TRITON_INTERPRET=1`` (run it directly with ``TRITON_INTERPRET=1 pytest <this file>``).

Inputs are on the binary grid k/8 and input thresholds at midpoints (3/16), so a rounding
difference cannot flip a mask bit of the input side; hidden thresholds are compared on fixed seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from tests.interpreted import run_interpreted

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
    assert " passed" in run_interpreted("-m", "not gpu", __file__, timeout=900)


@pytest.mark.skipif(INTERPRETED, reason="this process already interprets")
def test_fuzz_tier_triton_cases_interpreted():
    """The fuzz tier's triton cases (backend agreement on grid inputs, chunking, NaN and huge
    inputs against torch), which the suite's own process skips, run where Triton interprets;
    every one must run (none skipped)."""
    pytest.importorskip("hypothesis")
    fuzz = Path(__file__).resolve().parents[1] / "fuzz"
    summary = run_interpreted(
        "-k", "triton", str(fuzz / "test_fuzz_backends.py"), str(fuzz / "test_fuzz_numerics.py"),
        timeout=600,
    )  # fmt: skip
    assert " passed" in summary and "skipped" not in summary, summary


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
    """Outputs, every state field (``since_sync`` exactly) and counts; NaN where the spec has it."""
    (out_e, state_e, counts_e), (out_g, state_g, counts_g) = expected, got
    close = {"atol": atol, "rtol": 0, "equal_nan": True}
    torch.testing.assert_close(out_g.cpu(), out_e, **close)
    assert type(state_g) is type(state_e)
    for name, e, g in zip(state_e._fields, state_e, state_g, strict=True):
        if name == "since_sync":
            assert torch.equal(g.cpu().expand(e.shape), e), f"state.since_sync {g} != {e}"
        else:
            torch.testing.assert_close(g.cpu(), e, msg=f"state.{name}", **close)
    if counts_e is not None:
        for name in ("nx", "nh", "ux", "uh"):
            assert torch.equal(getattr(counts_g, name).cpu(), getattr(counts_e, name)), name
        for name in ("abs_x", "abs_h"):
            torch.testing.assert_close(
                getattr(counts_g, name).cpu(), getattr(counts_e, name), atol=1e-4, rtol=0,
                equal_nan=True,
            )  # fmt: skip


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


# The interpreter computes in NumPy, which warns about the NaN and inf these tests feed it.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "kind,x_mode,value",
    [("gru", "dense", float("nan")), ("gru", "sparse", float("inf")),
     ("lstm", "dense", 1e30), ("lstm", "sparse", -float("inf")), ("lstm", "sparse", float("nan"))],
)  # fmt: skip
def test_non_finite_and_huge_inputs_match_spec(kind, x_mode, value, device):
    """At Θ = 0 a NaN change is sent (NaN reaches the products and the output, as in torch),
    and the bound rule re-syncs the memories after a huge or infinite frame."""
    w_ih, w_hh, state, gen = make_layer(kind, 2, 4, 6, seed=3)
    x = grid(gen, 4, 2, 4)
    x[1, 0, 2] = value  # sample 0 only: sample 1 stays finite
    expected = spec(kind)(x, state, w_ih, w_hh, 0.0, 0.0, count=True)
    got = tb.run_sequence(
        x.to(device), to(state, device), tb.pack(w_ih.to(device), w_hh.to(device)),
        torch.zeros(4, device=device), torch.zeros(6, device=device), count=True, x_mode=x_mode,
    )  # fmt: skip
    assert_same_run(expected, got)
    out = got[0].cpu()
    assert torch.isfinite(out[:, 1]).all()
    if value != value:  # NaN: sent, so it poisons sample 0 from that step on, as in torch
        assert torch.isnan(out[1:, 0]).all()
    else:  # re-synced: finite again two steps after the bad frame
        assert torch.isfinite(out[3, 0]).all()


def drifted_layer(kind: str, batch: int, inputs: int, hidden: int):
    """A layer whose state's memory is off from W x̂ + W ĥ + b (by 0.5, and one element past
    MEMORY_BOUND in the last sample), with per-sample since_sync: a run that skips a re-sync
    the spec does keeps the offset and differs."""
    w_ih, w_hh, state, gen = make_layer(kind, batch, inputs, hidden, seed=5)
    b_ih = torch.randn(w_ih.shape[0], generator=gen) * 0.2
    b_hh = torch.randn(w_ih.shape[0], generator=gen) * 0.2
    initial = F.gru_initial_state if kind == "gru" else F.lstm_initial_state
    fresh = initial(w_ih, b_ih, b_hh, batch)
    m = fresh.m + 0.5
    m[-1, 1] = 4096.0  # past MEMORY_BOUND (1024)
    since = torch.zeros(batch, dtype=torch.int64)
    since[0] = 1  # with a period of 2 sample 0 re-syncs at step 0, the others at step 1
    state = state._replace(x_hat=fresh.x_hat, h_hat=fresh.h_hat, m=m, since_sync=since)
    return (w_ih, w_hh, b_ih, b_hh), state, gen


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("x_mode", ["dense", "sparse"])
def test_resync_matches_spec(kind, x_mode, device):
    """The re-sync rule: out of bound at the start (last sample) and every 2 steps from each
    sample's own since_sync; in one pass and in two chunks (since_sync carried)."""
    weights, state, gen = drifted_layer(kind, 3, 5, 7)
    w_ih, w_hh, b_ih, b_hh = weights
    x = grid(gen, 5, 3, 5)
    expected = spec(kind)(
        x, state, w_ih, w_hh, 3 / 16, 0.05, bias_ih=b_ih, bias_hh=b_hh, resync_every=2, count=True
    )
    packed = tb.pack(*(w.to(device) for w in weights))
    thx, thh = torch.full((5,), 3 / 16, device=device), torch.full((7,), 0.05, device=device)

    def run(x, state):
        return tb.run_sequence(
            x.to(device), to(state, device), packed, thx, thh, count=True, resync_every=2,
            x_mode=x_mode,
        )  # fmt: skip

    assert_same_run(expected, run(x, state))
    out_a, mid, _ = run(x[:3], state)
    out_b, final, _ = run(x[3:], mid)
    assert_same_run(expected[:2] + (None,), (torch.cat((out_a, out_b)), final, None))
    # Without a period only the bound rule applies, and since_sync is returned as given.
    expected = spec(kind)(x, state, w_ih, w_hh, 3 / 16, 0.05, bias_ih=b_ih, bias_hh=b_hh)
    got = tb.run_sequence(x.to(device), to(state, device), packed, thx, thh, x_mode=x_mode)
    assert_same_run(expected, got)
    with pytest.raises(ConfigError, match="resync_every"):
        tb.run_sequence(x.to(device), to(state, device), packed, thx, thh, resync_every=-1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_streamer_resync_matches_spec(kind, device):
    weights, state, gen = drifted_layer(kind, 2, 5, 7)
    w_ih, w_hh, b_ih, b_hh = weights
    x = grid(gen, 5, 2, 5)
    x[1, 0, 3] = float("inf")
    out_e, state_e, _ = spec(kind)(
        x, state, w_ih, w_hh, 3 / 16, 0.05, bias_ih=b_ih, bias_hh=b_hh, resync_every=3
    )
    streamer = tb.TritonStreamer(
        tb.pack(*(w.to(device) for w in weights)), to(state, device), 3 / 16, 0.05,
        resync_every=3,
    )  # fmt: skip
    outs = torch.stack([streamer.step(x[t].to(device)).clone() for t in range(5)])
    assert_same_run((out_e, state_e, None), (outs, streamer.state(), None))


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
    streamer = tst.StackStreamer(
        kind, moved, tuple(to(s, device) for s in states), count=True, resync_every=0
    )
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
    with pytest.raises(ConfigError, match="weights"):
        tst.StackStreamer("GRU", moved, states, weights="int4")
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
    with pytest.raises(ConfigError, match="resync_every"):
        tst.StackStreamer("GRU", moved, states, resync_every=-1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_stack_streamer_is_the_backends(kind, weights, device):
    """The backend protocol's StackStreamer: what select_streamer_backend finds for this device,
    step for step equal to the reference backend's (the spec) with biases, 8-bit weights, a
    re-sync period of 2, and an infinite frame that the bound rule recovers from."""
    from deltarnn.ops import reference, select_streamer_backend

    assert select_streamer_backend("triton", device, torch.float32).StackStreamer is (
        tst.StackStreamer
    )
    layers, states = make_stack(kind, 2, 2)
    gen = torch.Generator().manual_seed(4)
    layers = [
        p._replace(bias_ih=torch.randn(p.weight_ih.shape[0], generator=gen) * 0.2,
                   bias_hh=torch.randn(p.weight_ih.shape[0], generator=gen) * 0.2)
        for p in layers
    ]  # fmt: skip
    frames = grid(gen, 5, 2, 5)
    frames[1, 1, 0] = float("inf")
    options = {"count": True, "weights": weights, "resync_every": 2}
    expected = reference.StackStreamer(kind, layers, states, **options)
    moved = [Layer(*(t if t is None else t.to(device) for t in p)) for p in layers]
    got = tst.StackStreamer(kind, moved, tuple(to(s, device) for s in states), **options)
    for frame in frames:
        h_e = expected.step(frame)
        torch.testing.assert_close(got.step(frame.to(device)).cpu(), h_e, atol=ATOL, rtol=0)
        for s_e, s_g, c_e, c_g in zip(
            expected.state(), got.state(), expected.counts(), got.counts(), strict=True
        ):
            assert_same_run((h_e[:0], s_e, c_e), (h_e[:0], s_g, c_g))
    assert torch.isfinite(h_e).all()  # recovered from the infinite frame


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


# ---------------------------------------------------------------------------------------------
# CUDA-graph replay on the CPU: a stand-in graph that records at capture and re-runs at replay
# ---------------------------------------------------------------------------------------------


class FakeGraph(torch.utils._python_dispatch.TorchDispatchMode):
    """A CUDA graph's contract, on the CPU: ``capture`` records the torch ops and Triton launches
    of a call (the launches are not run, as in a real capture) and :meth:`replay` runs exactly
    the recorded work again, on the tensors of the capture (an op's result is written back into
    the tensor the capture produced, as a graph's private memory). Host code that does not run
    at capture time is not replayed, and a host read of a device value (``.item()``, ``bool()``)
    during the capture fails, as it does on a GPU."""

    def __init__(self):
        super().__init__()
        self.work: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError(f"host read of a device value during graph capture: {func}")
        result = func(*args, **kwargs)
        self.work.append(("op", func, args, kwargs, result))
        return result

    def launch(self, kernel, grid, args, kwargs):
        self.work.append(("triton", kernel, grid, args, kwargs))

    def replay(self):
        for item in self.work:
            if item[0] == "triton":
                _, kernel, grid, args, kwargs = item
                kernel[grid](*args, **kwargs)
                continue
            _, func, args, kwargs, recorded = item
            result = func(*args, **kwargs)
            for old, new in zip(_tensors(recorded), _tensors(result), strict=True):
                if old.data_ptr() != new.data_ptr():
                    old.copy_(new)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


class _Kernels:
    """The kernel module, its launches recorded while a :class:`FakeGraph` captures."""

    capturing: FakeGraph | None = None

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        kernel = getattr(self._module, name)
        owner = self

        class Launcher:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    if owner.capturing is not None:
                        owner.capturing.launch(kernel, grid, args, kwargs)
                    else:
                        kernel[grid](*args, **kwargs)

                return launch

        return Launcher()


@pytest.fixture
def fake_graphs(monkeypatch):
    """CUDA-graph mode on the CPU (interpreter): every graph captured is a :class:`FakeGraph`;
    the list of graphs captured is returned."""
    kernels = _Kernels(triton_common.kernels())
    graphs: list[FakeGraph] = []

    def capture_graph(fn):
        fn()  # the warm-up run (compiles on a GPU), as triton_common.capture_graph does
        graph = FakeGraph()
        kernels.capturing = graph
        try:
            with graph:
                result = fn()
        finally:
            kernels.capturing = None
        graphs.append(graph)
        return graph, result

    for module in (tb, tst):
        monkeypatch.setattr(module, "capture_graph", capture_graph)
        monkeypatch.setattr(module, "_use_graph", lambda device, use_graph: use_graph is not False)
    monkeypatch.setattr(tb, "kernels", lambda: kernels)
    return graphs


@pytest.mark.skipif(not INTERPRETED, reason="run by test_interpreter_subprocess")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_stack_streamer_graph_replay(kind, fake_graphs):
    """The stack streamer in CUDA-graph mode: two graphs (one per parity) captured at
    construction, then every frame is a replay, step for step the spec's (re-sync period 2, an
    infinite frame, counts); load_state() continues the same graphs from a saved state."""
    from deltarnn.ops import reference

    layers, states = make_stack(kind, 2, 2)
    frames = grid(torch.Generator().manual_seed(6), 6, 2, 5)
    frames[2, 0, 1] = float("inf")
    options = {"count": True, "resync_every": 2}
    expected = reference.StackStreamer(kind, layers, states, **options)
    got = tst.StackStreamer(kind, layers, states, use_graph=True, **options)
    assert len(fake_graphs) == 2 and all(g.work for g in fake_graphs)
    saved = None
    for t, frame in enumerate(frames):
        h_e = expected.step(frame)
        torch.testing.assert_close(got.step(frame), h_e, atol=ATOL, rtol=0)
        for s_e, s_g, c_e, c_g in zip(
            expected.state(), got.state(), expected.counts(), got.counts(), strict=True
        ):
            assert_same_run((h_e[:0], s_e, c_e), (h_e[:0], s_g, c_g))
        if t == 2:
            saved = got.state()
    got.load_state(saved)
    expected.load_state(saved)
    for frame in frames[3:]:
        torch.testing.assert_close(got.step(frame), expected.step(frame), atol=ATOL, rtol=0)
    assert len(fake_graphs) == 2  # nothing captured again


@pytest.mark.skipif(not INTERPRETED, reason="run by test_interpreter_subprocess")
@pytest.mark.parametrize("x_mode", ["dense", "sparse"])
def test_sequence_graph_replay(x_mode, fake_graphs):
    """run_sequence in CUDA-graph mode: T = 5 as segments of 4 and 1 (one graph each), the
    period carried across them; a second call replays the cached graphs and gives the same."""
    weights, state, gen = drifted_layer("gru", 2, 5, 7)
    w_ih, w_hh, b_ih, b_hh = weights
    x = grid(gen, 5, 2, 5)
    expected = F.delta_gru(
        x, state, w_ih, w_hh, 3 / 16, 0.05, bias_ih=b_ih, bias_hh=b_hh, resync_every=2, count=True
    )
    packed = tb.pack(*weights)
    thx, thh = torch.full((5,), 3 / 16), torch.full((7,), 0.05)
    for _ in range(2):
        got = tb.run_sequence(
            x, state, packed, thx, thh, count=True, resync_every=2, x_mode=x_mode, use_graph=True
        )
        assert_same_run(expected, got)
    assert len(fake_graphs) == 2


@pytest.mark.skipif(not INTERPRETED, reason="run by test_interpreter_subprocess")
def test_fake_graph_replays_only_what_was_captured(fake_graphs):
    """The stand-in has teeth: a host-side update between replays is not replayed, and a
    host read during capture fails."""
    buffer = torch.zeros(3)
    _, _ = tb.capture_graph(lambda: buffer.add_(1))
    graph = fake_graphs[-1]
    buffer.zero_()
    graph.replay()
    graph.replay()
    assert buffer.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(AssertionError, match="host read"):
        tb.capture_graph(lambda: bool(buffer.sum() > 0))
