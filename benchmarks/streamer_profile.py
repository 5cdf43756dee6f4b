"""Where a frame of ``module.streamer()`` goes: the FSDD GRU of the streaming benchmark, one thread.

Times, over the test recordings' frames (each piece alone, medians of 7 passes of µs/frame):

* ``Streamer.step``: the public call (the staleness check, the frame check, a fresh output
  tensor and the compiled step);
* ``Streamer.step(out=)``: the same into a preallocated output;
* ``Streamer.step``, module released: the streamer of a module that was dropped once the
  streamer was built (as deployed), whose steps have nothing left to check;
* the staleness check alone (``TensorWatch.changed``: a data pointer and a version per
  parameter and threshold);
* a fresh output tensor alone (``torch.empty_like``);
* the compiled stack step alone (the cpu backend's call of its kernel, on checked tensors).

The pieces are timed apart, so their sum differs from the whole by call overheads and cache
effects. The model is trained into ``--fsdd-run`` the first time (see
``deltarnn.bench.fsdd_model``)::

    DELTARNN_DATA=../shared/data python benchmarks/streamer_profile.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import deltarnn
from deltarnn.bench import fsdd_model


def per_frame(fn, items, passes: int = 7) -> float:
    """Median over ``passes`` of the mean µs per call of ``fn(item)`` over ``items``."""
    means = []
    for _ in range(passes):
        start = time.perf_counter()
        for item in items:
            fn(item)
        means.append((time.perf_counter() - start) / len(items) * 1e6)
    return statistics.median(means)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd-run", default="runs/streaming-fsdd", help="model folder")
    parser.add_argument("--recordings", type=int, default=40, help="test recordings streamed")
    args = parser.parse_args(argv)
    fsdd_model.prepare(args.fsdd_run)
    dense, theta, streams, _ = fsdd_model.load(args.fsdd_run)
    delta = deltarnn.from_torch(dense, theta_x=theta, theta_h=theta).eval()
    torch.set_num_threads(1)
    with torch.inference_mode():
        frames = [frame for x in streams[: args.recordings] for frame in x]
        streamer = delta.streamer(backend="cpu")
        engine = streamer._engine  # the cpu backend's StackStreamer
        out = torch.empty(1, delta.hidden_size)
        for frame in frames[:200]:
            streamer.step(frame)  # compiled and warm

        rows = [
            ("Streamer.step(frame)", per_frame(streamer.step, frames)),
            ("Streamer.step(frame, out=)", per_frame(lambda f: streamer.step(f, out=out), frames)),
            ("staleness check alone", per_frame(lambda f: streamer._watch.changed(), frames)),
            ("fresh output alone", per_frame(lambda f: torch.empty_like(out), frames)),
            ("compiled step alone", per_frame(lambda f: engine._run(f, out, False), frames)),
        ]
        # Built after the rows above (a second streamer's buffers moved their figures by up to
        # 0.6 us): a module of its own, dropped here, whose streamer then has nothing to check.
        alone = deltarnn.from_torch(dense, theta_x=theta, theta_h=theta).eval()
        alone = alone.streamer(backend="cpu")
        for frame in frames[:200]:
            alone.step(frame)
        rows.insert(2, ("Streamer.step(frame), module released", per_frame(alone.step, frames)))
    print(f"FSDD GRU 2x128, Θ = {theta:g}, {len(frames)} frames, one thread")
    print("| piece | µs/frame |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
