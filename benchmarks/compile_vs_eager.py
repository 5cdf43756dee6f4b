"""torch.compile of a delta GRU against eager, batch 1, one thread, inference.

The compiled module (inductor, ``fullgraph=True``) records one ``deltarnn::gru_layer`` operator
per layer (README, "Export and compile"). Cases: a 2-layer GRU (I = 40, H = 128, Θ = 0.1) over a
sequence of T = 100 frames (``forward``), the same GRU streamed one frame per call
(``stream(frame, state)``, the state carried), a ``DeltaGRUCell`` called per frame (state
carried), the cell's operator called alone (no module code: what torch.compile itself adds
per call), and the GRU's one-frame step exported (``torch.export`` of
``deltarnn.nn.capture.StreamStep``, run from ``program.module()``) against the same step eager. The input is a random walk on the grid k/4 in which 20 % of the features move per
frame. Every compiled output is checked equal to eager first; times are medians of interleaved
repeats (``deltarnn.bench.harness.time_interleaved``, thread CPU time).

    python benchmarks/compile_vs_eager.py --repeats 21
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import deltarnn
from deltarnn.bench import controlled_sequence, threads
from deltarnn.bench.harness import clock, time_interleaved
from deltarnn.nn.capture import StreamStep
from deltarnn.ops import custom_ops


class Carried:
    """Calls ``step(frame, state) -> (output, state)`` frame after frame, carrying the state."""

    def __init__(self, step, frames, state):
        self.step, self.frames, self.state, self.t = step, frames, state, 0

    def __call__(self):
        self.t = (self.t + 1) % len(self.frames)
        out, self.state = self.step(self.frames[self.t], self.state)
        return out


def cases():
    """(name, eager callable, compiled callable) per case; each call advances one frame (or
    runs the whole sequence, for the first case)."""
    torch.manual_seed(0)
    gru = deltarnn.DeltaGRU(40, 128, num_layers=2, theta_x=0.1, theta_h=0.1).eval()
    cell = deltarnn.DeltaGRUCell(40, 128, theta_x=0.1, theta_h=0.1).eval()
    x = controlled_sequence(100, 1, 40, 0.2, seed=0)
    weights = custom_ops.pack(*cell.layer_weights(0))
    theta_x, theta_h = cell.thresholds(0)

    def operator(frame, state):
        return custom_ops.gru(frame.unsqueeze(0), state, weights, theta_x, theta_h)[:2]

    compiled_gru = torch.compile(gru, fullgraph=True)
    yield "DeltaGRU 2x128, T=100 (per frame)", lambda: gru(x), lambda: compiled_gru(x), 100
    frames = list(x.split(1))
    for name, module, inputs, state in (
        ("DeltaGRU 2x128 stream, T=1", gru.stream, frames, gru.initial_state(1)),
        ("DeltaGRUCell 128, per frame", cell, list(x), cell.initial_state(1)[0]),
        ("its operator alone, per frame", operator, list(x), cell.initial_state(1)[0]),
    ):
        compiled = torch.compile(module, fullgraph=True)
        yield name, Carried(module, inputs, state), Carried(compiled, inputs, state), 1
    step = StreamStep(gru)
    flat = step.flatten(gru.initial_state(1))
    with torch.no_grad():
        exported = torch.export.export(step, (x[0], *flat)).module()

    def flat_step(fn):
        def run(frame, state):
            out, *state = fn(frame, *state)
            return out, state

        return run

    yield (
        "DeltaGRU 2x128 exported step (StreamStep), per frame",
        Carried(flat_step(step), list(x), flat),
        Carried(flat_step(exported), list(x), flat),
        1,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--calls", type=int, default=20, help="calls per timed repeat")
    args = parser.parse_args(argv)
    print("| case | eager µs/frame | compiled or exported µs/frame | ratio to eager |")
    print("|---|---:|---:|---:|")
    with threads(1), torch.no_grad():
        for name, eager, compiled, frames in cases():
            leaves = torch.utils._pytree.tree_leaves
            for _ in range(3):  # equal before timed, over a few frames of the stream
                for a, b in zip(leaves(compiled()), leaves(eager()), strict=True):
                    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)

            def many(fn):
                return lambda: [fn() for _ in range(args.calls)]

            timers = {"eager": many(eager), "compiled": many(compiled)}
            times = time_interleaved(timers, args.repeats, 2, clock(1))
            per_frame = {
                k: statistics.median(v) / (args.calls * frames) * 1e6 for k, v in times.items()
            }
            ratio = per_frame["compiled"] / per_frame["eager"]
            print(
                f"| {name} | {per_frame['eager']:.1f} | {per_frame['compiled']:.1f} | {ratio:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
