"""torch.compile of a delta GRU against eager, batch 1, one thread, inference.

The compiled module (inductor, ``fullgraph=True``) records one ``deltarnn::gru_layer`` operator
per layer (README, "Export and compile"). Cases: a 2-layer GRU (I = 40, H = 128, Θ = 0.1) over a
sequence of T = 100 frames and over T = 1 (one call per frame), a ``DeltaGRUCell`` call, and
the cell's operator called alone (no module code: what torch.compile itself adds per call). The
input is a random walk on the grid k/4 in which 20 % of the features move per frame. Every
compiled output is checked equal to eager first; times are medians of interleaved repeats
(``deltarnn.bench.harness.time_interleaved``, thread CPU time).

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
from deltarnn.ops import custom_ops


def cases():
    torch.manual_seed(0)
    gru = deltarnn.DeltaGRU(40, 128, num_layers=2, theta_x=0.1, theta_h=0.1).eval()
    cell = deltarnn.DeltaGRUCell(40, 128, theta_x=0.1, theta_h=0.1).eval()
    x = controlled_sequence(100, 1, 40, 0.2, seed=0)
    state = cell.initial_state(1)[0]
    yield "DeltaGRU 2x128, T=100", gru, (x,), 100
    yield "DeltaGRU 2x128, T=1", gru, (x[:1],), 1
    yield "DeltaGRUCell 128, one call", cell, (x[0], state), 1
    weights, (theta_x, theta_h) = cell.layer_weights(0)[:2], cell.thresholds(0)

    def operator(frame, state):
        return custom_ops.gru(frame.unsqueeze(0), state, weights, theta_x, theta_h)[:2]

    yield "its operator alone, one call", operator, (x[0], state), 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--calls", type=int, default=20, help="calls per timed repeat")
    args = parser.parse_args(argv)
    print("| case | eager µs/frame | compiled µs/frame | compiled / eager |")
    print("|---|---:|---:|---:|")
    with threads(1), torch.no_grad():
        for name, module, inputs, frames in cases():
            compiled = torch.compile(module, fullgraph=True)
            leaves = torch.utils._pytree.tree_leaves
            for a, b in zip(leaves(compiled(*inputs)), leaves(module(*inputs)), strict=True):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # equal before timed

            def many(fn, inputs=inputs):
                return lambda: [fn(*inputs) for _ in range(args.calls)]

            timers = {"eager": many(module), "compiled": many(compiled)}
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
