"""How far the backends drift apart on one long float32 stream, with and without deterministic=True.

(benchmarks/backend_agreement.py measures many short random cases instead.)

One delta GRU (random weights, seed 0) runs a random walk of ``--frames`` frames on each backend
that can run here: ``reference`` and ``fused`` (with gradients, as in training) and ``cpu``
(without, as in inference). Each is compared with the reference run of the same mode: the largest
output difference, the steps whose outputs differ by more than 1e-3, the steps whose send counts
differ, and the time per frame (one run each after a warm-up; the machine may be shared).

    .venv/bin/python benchmarks/long_stream_agreement.py --frames 10000
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import deltarnn
from deltarnn.ops import load_backend


def run(module, backend: str, x: torch.Tensor):
    m = copy.deepcopy(module)
    m.backend = backend
    grad = backend == "fused"  # the training path: auto picks fused when gradients are needed
    with torch.set_grad_enabled(grad):
        m.stream(x[:50])  # warm-up: compilation and caches stay out of the timing
    start = time.perf_counter()
    with torch.set_grad_enabled(grad):
        out, _, counts = m.stream(x, count=True)
    seconds = time.perf_counter() - start
    sent = torch.stack([torch.stack((c.nx, c.nh)) for c in counts])  # (L, 2, T, B)
    return out.detach().double(), sent, seconds


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--input-size", type=int, default=40)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--theta", type=float, default=0.2)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    steps = torch.randn(args.frames, args.batch, args.input_size, generator=g) * 0.1
    x = torch.cumsum(steps, dim=0)
    rows = []
    for deterministic in (False, True):
        module = deltarnn.DeltaGRU(
            args.input_size,
            args.hidden_size,
            theta_x=args.theta,
            theta_h=args.theta,
            deterministic=deterministic,
        )
        ref, ref_sent, ref_s = run(module, "reference", x)
        for backend in ("fused", "cpu"):
            if load_backend(backend) is None:
                continue
            out, sent, seconds = run(module, backend, x)
            diff = (out - ref).abs().amax(dim=(1, 2))
            rows.append(
                {
                    "deterministic": deterministic,
                    "backend": backend,
                    "frames": args.frames,
                    "max_abs_diff": float(diff.max()),
                    "steps_over_1e-3": int((diff > 1e-3).sum()),
                    "steps_with_other_sends": int((sent != ref_sent).any(0).any(0).any(-1).sum()),
                    "us_per_frame": 1e6 * seconds / args.frames,
                    "reference_us_per_frame": 1e6 * ref_s / args.frames,
                }
            )
    print("deterministic backend  max |diff|  steps >1e-3  steps with other sends  µs/frame")
    for r in rows:
        print(
            f"{str(r['deterministic']):<13} {r['backend']:<7} {r['max_abs_diff']:10.3g} "
            f"{r['steps_over_1e-3']:12d} {r['steps_with_other_sends']:23d} {r['us_per_frame']:9.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
