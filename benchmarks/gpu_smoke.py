"""GPU smoke check: every GPU code path once, cheapest first, in well under a minute.

Each stage runs in its own ``try``, prints ``ok``/``FAIL``/``skip`` with its time, and a failure
does not stop the later stages (one compile error should not hide the others); the exit status
is 1 when any stage failed. ``benchmarks/gpu_check.sh`` runs it first and stops there on a
failure, before spending minutes on tests and benchmarks.

    python benchmarks/gpu_smoke.py [--out DIR]              # on a GPU
    TRITON_INTERPRET=1 python benchmarks/gpu_smoke.py       # CPU: the same checks, interpreted
                                                            # (no graphs, no timing)

Every result is compared with the functional spec (:mod:`deltarnn.functional`) on binary-grid
inputs with Θx at midpoints, and 1/√H weights, so that a rounding cannot flip a send decision.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from deltarnn import functional as F
from deltarnn.ops import triton as tb
from deltarnn.ops import triton_common
from deltarnn.ops import triton_train as tt

THETA_X, THETA_H = 3 / 16, 0.05
ATOL = 1e-4


class Skip(Exception):
    """A stage that does not apply here (no CUDA graphs or timing under the interpreter)."""


def layer(kind, batch, inputs, hidden, device, dtype=torch.float32, steps=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gates = 3 if kind == "gru" else 4
    w_ih = torch.randn(gates * hidden, inputs, generator=gen) / inputs**0.5
    w_hh = torch.randn(gates * hidden, hidden, generator=gen) / hidden**0.5
    bias = torch.randn(gates * hidden, generator=gen) * 0.1
    h0 = torch.randn(batch, hidden, generator=gen) * 0.5
    if kind == "gru":
        state = F.gru_initial_state(w_ih, bias, bias, batch, h0=h0)
    else:
        state = F.lstm_initial_state(w_ih, bias, bias, batch, h0=h0, c0=h0.clone())
    x = torch.randint(-8, 9, (steps, batch, inputs), generator=gen).float() / 8
    w_ih, w_hh, x = w_ih.to(dtype), w_hh.to(dtype), x.to(dtype)
    spec = (F.delta_gru if kind == "gru" else F.delta_lstm)(
        x.float(), state, w_ih.float(), w_hh.float(), THETA_X, THETA_H, count=True
    )
    moved = type(state)(*(t.to(device) for t in state))
    return w_ih.to(device), w_hh.to(device), moved, x.to(device), spec


def check(expected, got, atol=ATOL):
    (out_e, state_e, counts_e), (out_g, state_g, counts_g) = expected, got
    torch.testing.assert_close(out_g.float().cpu(), out_e, atol=atol, rtol=0)
    for name, e, g in zip(state_e._fields, state_e, state_g, strict=True):
        if name == "since_sync":  # an int64 step counter: equal, once broadcast
            assert torch.equal(*torch.broadcast_tensors(g.cpu(), e.cpu())), name
            continue
        torch.testing.assert_close(g.float().cpu(), e, atol=atol, rtol=0, msg=f"state.{name}")
    if counts_g is not None:
        for name in ("nx", "nh", "ux", "uh"):
            assert torch.equal(getattr(counts_g, name).cpu(), getattr(counts_e, name)), name


def sequence(device, kind="gru", batch=2, dtype=torch.float32, atol=ATOL, **kwargs):
    inputs, hidden = 24, 40
    w_ih, w_hh, state, x, spec = layer(kind, batch, inputs, hidden, device, dtype)
    thx = torch.full((inputs,), THETA_X, device=device)
    thh = torch.full((hidden,), THETA_H, device=device)
    packed = tb.pack(w_ih, w_hh)
    for _ in range(2):  # the second call replays a captured graph, or reuses the buffers
        got = tb.run_sequence(x, state, packed, thx, thh, count=True, **kwargs)
        check(spec, got, atol)
    return f"B={batch} I={inputs} H={hidden} T={x.shape[0]}"


def needs_cuda(device):
    if device.type != "cuda":
        raise Skip("needs CUDA")


def streamer(device, use_graph):
    if use_graph:
        needs_cuda(device)
    w_ih, w_hh, state, x, spec = layer("gru", 3, 16, 33, device)
    s = tb.TritonStreamer(tb.pack(w_ih, w_hh), state, THETA_X, THETA_H, use_graph=use_graph)
    outs = torch.stack([s.step(frame).clone() for frame in x])
    check((spec[0], spec[1], None), (outs, s.state(), None))
    return f"graph={use_graph}"


def stack(device, use_graph):
    """A 2-layer GRU stack, one graph replay per frame, against the spec layer after layer (with
    a re-sync period of 4 steps)."""
    from types import SimpleNamespace

    from deltarnn.ops.triton_stream import StackStreamer

    if use_graph:
        needs_cuda(device)
    built = [layer("gru", 2, 16, 33, device, seed=0), layer("gru", 2, 33, 20, device, seed=1)]
    layers = [
        SimpleNamespace(
            weight_ih=w_ih, weight_hh=w_hh, bias_ih=None, bias_hh=None,
            theta_x=torch.full((w_ih.shape[1],), THETA_X if k == 0 else 0.0, device=device),
            theta_h=torch.full((w_hh.shape[1],), THETA_H, device=device),
        )
        for k, (w_ih, w_hh, _, _, _) in enumerate(built)
    ]  # fmt: skip
    states = tuple(b[2] for b in built)
    x = built[0][3]
    # A re-sync period shorter than the run: the dense re-sync of the step kernel runs too.
    s = StackStreamer("GRU", layers, states, use_graph=use_graph, resync_every=4)
    outs = torch.stack([s.step(frame) for frame in x])
    expected, spec_states = x.cpu(), []
    for p, st in zip(layers, states, strict=True):
        cpu_state = type(st)(*(t.cpu() for t in st))
        expected, new_state, _ = F.delta_gru(
            expected, cpu_state, p.weight_ih.cpu(), p.weight_hh.cpu(), p.theta_x.cpu(),
            p.theta_h.cpu(), resync_every=4,
        )  # fmt: skip
        spec_states.append(new_state)
    torch.testing.assert_close(outs.cpu(), expected, atol=ATOL, rtol=0)
    for e, g in zip(spec_states, s.state(), strict=True):
        check((expected[:0], e, None), (expected[:0], g, None))
    return f"2 layers, B=2, graph={use_graph}"


def training(device, kind, use_graph, dtype=torch.float32, atol=2e-5):
    if use_graph:
        needs_cuda(device)
    batch, inputs, hidden, steps = 3, 10, 24, 5
    gen = torch.Generator().manual_seed(1)
    gates = 3 if kind == "gru" else 4
    leaves = [
        (torch.randn(gates * hidden, inputs, generator=gen) / inputs**0.5).to(dtype),
        (torch.randn(gates * hidden, hidden, generator=gen) / hidden**0.5).to(dtype),
        torch.zeros(gates * hidden, dtype=dtype),
    ]
    x = (torch.randint(-8, 9, (steps, batch, inputs), generator=gen) / 8).to(dtype)
    grad = torch.randn(steps, batch, hidden, generator=gen).to(dtype)
    init = F.gru_initial_state if kind == "gru" else F.lstm_initial_state

    def run(fn, on, **kwargs):
        params = [p.to(on).requires_grad_() for p in leaves]
        state = init(params[0], params[2], params[2], batch)
        out, _, _ = fn(x.to(on), state, params[0], params[1], THETA_X, THETA_H, **kwargs)
        (out * grad.to(on)).sum().backward()
        return out.detach().cpu(), [p.grad.cpu() for p in params]

    spec = (
        (F.delta_gru, tt.delta_gru_train) if kind == "gru" else (F.delta_lstm, tt.delta_lstm_train)
    )
    out_e, grads_e = run(spec[0], "cpu")
    for _ in range(2 if use_graph else 1):  # capture, then replay
        out_g, grads_g = run(spec[1], device, impl="triton", use_graph=use_graph)
        torch.testing.assert_close(out_g, out_e, atol=atol, rtol=0)
        for name, e, g in zip(("w_ih", "w_hh", "bias"), grads_e, grads_g, strict=True):
            torch.testing.assert_close(g, e, atol=atol * 10, rtol=0, msg=f"d/d{name}")
    return f"{kind} {str(dtype).split('.')[-1]} graph={use_graph}"


def timing_b1_h2048(device):
    """One headline figure: batch 1, H = 2048, 10 % input occupancy, against cuDNN."""
    needs_cuda(device)
    from deltarnn.bench.inputs import controlled_sequence

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    hidden, steps = 2048, 100
    torch.manual_seed(0)
    gru = torch.nn.GRU(hidden, hidden).to(device)
    x = controlled_sequence(steps, 1, hidden, 0.10, seed=0).to(device)
    packed = tb.pack(gru.weight_ih_l0.detach(), gru.weight_hh_l0.detach())
    state = F.gru_initial_state(
        gru.weight_ih_l0.detach(), gru.bias_ih_l0.detach(), gru.bias_hh_l0.detach(), 1
    )
    thx = torch.full((hidden,), 0.125, device=device)
    thh = torch.full((hidden,), 0.01, device=device)

    def ours():
        tb.run_sequence(x, state, packed, thx, thh)

    def cudnn():
        with torch.no_grad():
            gru(x)

    times = {"ours": [], "cudnn": []}
    for r in range(12):
        for name, fn in (("cudnn", cudnn), ("ours", ours)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            if r >= 2:  # warm-up: compile, capture
                times[name].append(start.elapsed_time(end) * 1e3 / steps)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return (
        f"us/step cuDNN {med['cudnn']:.1f}, ours {med['ours']:.1f}, "
        f"cuDNN/ours {med['cudnn'] / med['ours']:.2f} (TF32 off; Θh=0.01, h occupancy not tuned)"
    )


def versions(device):
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)"
    if not triton_common.version_supported():
        raise RuntimeError(f"triton {triton.__version__} outside {triton_common.TRITON_RANGE}")
    return f"torch {torch.__version__}, triton {triton.__version__}, {name}"


def stages(device):
    graph = device.type == "cuda"
    return [
        ("versions", lambda: versions(device)),
        ("gru B=2 eager", lambda: sequence(device, use_graph=False)),
        ("gru B=2 cuda graph", lambda: (needs_cuda(device), sequence(device, use_graph=True))[1]),
        ("gru B=1 sparse x", lambda: sequence(device, batch=1, x_mode="sparse")),
        ("gru B=20 tl.dot", lambda: sequence(device, batch=20)),
        ("lstm B=2", lambda: sequence(device, kind="lstm")),
        ("gru fp16", lambda: sequence(device, dtype=torch.float16, atol=1e-2)),
        ("TritonStreamer eager", lambda: streamer(device, False)),
        ("TritonStreamer graph", lambda: streamer(device, True)),
        ("StackStreamer eager", lambda: stack(device, False)),
        ("StackStreamer graph", lambda: stack(device, True)),
        ("training gru fp32 eager", lambda: training(device, "gru", False)),
        ("training gru fp32 graph", lambda: training(device, "gru", True)),
        (
            "training gru fp64 eager",
            lambda: training(device, "gru", False, torch.float64, 1e-10),
        ),
        ("training lstm fp32 graph", lambda: training(device, "lstm", graph)),
        ("timing B=1 H=2048 vs cuDNN", lambda: timing_b1_h2048(device)),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write smoke.json here")
    args = parser.parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif triton_common.interpret():
        device = torch.device("cpu")
    else:
        parser.error("no CUDA device: run with TRITON_INTERPRET=1 on a CPU")
    results = []
    started = time.perf_counter()
    for name, stage in stages(device):
        t0 = time.perf_counter()
        try:
            detail, status = stage(), "ok"
        except Skip as exc:
            detail, status = str(exc), "skip"
        except Exception as exc:  # a failed stage is reported and the next one runs
            detail, status = f"{type(exc).__name__}: {exc}", "FAIL"
            traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        results.append({"stage": name, "status": status, "seconds": seconds, "detail": detail})
        print(f"{status:4s} {seconds:6.1f} s  {name}: {detail}", flush=True)
    failed = [r["stage"] for r in results if r["status"] == "FAIL"]
    print(f"smoke: {len(results) - len(failed)} ok or skipped, {len(failed)} failed, "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "smoke.json").write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
