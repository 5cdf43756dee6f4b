"""How far a float32 delta GRU's accumulated memories drift from the dense network over a long
stream, with and without the periodic re-sync (:data:`deltarnn.functional.RESYNC_EVERY`).

At Θ = 0 a delta GRU computes exactly the dense network, but its memories are sums of T deltas
(``M_t = M_{t-1} + W Δ_t``), so float32 rounding accumulates with T where the dense product does
not. The re-sync recomputes ``M = W x̂ + W ĥ + b`` every N steps, which bounds that error. One
GRU (I = 16, H = 64, torch's initialisation, seed 0) runs a bounded multi-sine signal with noise;
every output is compared with torch's ``nn.GRU`` in float64 on the same (float32-rounded) input.
Rows: the ``cpu`` backend's kernel with the period N = RESYNC_EVERY and with N = 0 (the bound
rule only), and torch's dense float32 ``nn.GRU`` (the rounding floor of float32 itself). The
largest |h - h_float64| is reported per decade of steps.

    .venv/bin/python benchmarks/resync_drift.py --frames 10000000 --out benchmarks/results/resync_drift

Writes ``resync_drift.json`` and ``resync_drift.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from deltarnn.functional import RESYNC_EVERY, gru_initial_state
from deltarnn.ops import cpu

INPUTS, HIDDEN = 16, 64


def signal(start: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Frames start..start+steps-1 of the test signal, (T, 1, INPUTS) float32: per feature a sum
    of two sines (periods 50-5,000 steps) plus uniform noise, within [-1.2, 1.2]."""
    t = torch.arange(start, start + steps, dtype=torch.float64)[:, None]
    feature = torch.arange(INPUTS, dtype=torch.float64)[None, :]
    slow = torch.sin(2 * math.pi * t / (5000.0 / (1 + feature)) + feature)
    fast = 0.5 * torch.sin(2 * math.pi * t / (50.0 + 7 * feature))
    noise = 0.2 * (torch.rand(steps, INPUTS, generator=generator, dtype=torch.float64) - 0.5)
    return ((slow + fast) / 1.5 + noise).float()[:, None, :]


def decade_maxima(errors: list[tuple[int, float]], frames: int) -> dict[str, float]:
    """Largest error per decade of steps: key '1e3' holds steps 101..1000 (key '1e1': 1..10)."""
    out: dict[str, float] = {}
    decade = 10
    while decade < frames * 10:
        top = min(decade, frames)
        worst = max((e for step, e in errors if decade // 10 < step <= top), default=None)
        if worst is not None:
            out[f"1e{round(math.log10(decade))}"] = worst
        decade *= 10
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/resync_drift"))
    args = parser.parse_args()
    if args.frames % args.chunk:
        parser.error("--frames must be a multiple of --chunk")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense32 = torch.nn.GRU(INPUTS, HIDDEN)
    dense64 = torch.nn.GRU(INPUTS, HIDDEN).double()
    dense64.load_state_dict(dense32.state_dict())
    w_ih, w_hh = dense32.weight_ih_l0.detach(), dense32.weight_hh_l0.detach()
    b_ih, b_hh = dense32.bias_ih_l0.detach(), dense32.bias_hh_l0.detach()
    packed = cpu.pack(w_ih, w_hh, b_ih, b_hh)
    periods = {f"delta, re-sync every {RESYNC_EVERY}": RESYNC_EVERY, "delta, bound rule only": 0}
    states = {name: gru_initial_state(w_ih, b_ih, b_hh, 1) for name in periods}
    h32 = torch.zeros(1, 1, HIDDEN)
    h64 = torch.zeros(1, 1, HIDDEN, dtype=torch.float64)
    errors: dict[str, list[tuple[int, float]]] = {name: [] for name in [*periods, "dense float32"]}
    seconds = dict.fromkeys(errors, 0.0)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, args.frames, args.chunk):
            x = signal(start, args.chunk, generator)
            ref, h64 = dense64(x.double(), h64)
            outputs = {}
            for name, period in periods.items():
                tic = time.perf_counter()
                out, states[name], _ = cpu.gru(
                    x, states[name], packed, 0.0, 0.0, resync_every=period
                )
                seconds[name] += time.perf_counter() - tic
                outputs[name] = out
            tic = time.perf_counter()
            outputs["dense float32"], h32 = dense32(x, h32)
            seconds["dense float32"] += time.perf_counter() - tic
            # The worst step of each tenth of a chunk keeps the per-decade maxima exact enough
            # while the record stays small.
            steps = torch.arange(start + 1, start + args.chunk + 1)
            for name, out in outputs.items():
                err = (out.double() - ref).abs().amax(dim=(1, 2))
                tenths = args.chunk // 10
                for piece, where in zip(err.split(tenths), steps.split(tenths), strict=True):
                    i = int(piece.argmax())
                    errors[name].append((int(where[i]), float(piece[i])))
            if (start // args.chunk) % 100 == 99:
                done = start + args.chunk
                print(f"{done} frames, {time.perf_counter() - started:.0f} s", flush=True)
    result = {
        "frames": args.frames,
        "chunk": args.chunk,
        "sizes": {"input": INPUTS, "hidden": HIDDEN},
        "resync_every": RESYNC_EVERY,
        "max_abs_error_per_decade": {n: decade_maxima(e, args.frames) for n, e in errors.items()},
        "us_per_frame": {n: 1e6 * s / args.frames for n, s in seconds.items()},
        "command": f"python benchmarks/resync_drift.py --frames {args.frames} --out {args.out}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "resync_drift.json").write_text(json.dumps(result, indent=1) + "\n")
    decades = list(next(iter(result["max_abs_error_per_decade"].values())))
    lines = [
        f"Largest |h - h_float64| within each decade of steps (column 'steps to 1e4': steps "
        f"1,001 to 10,000; GRU {INPUTS}->{HIDDEN}, Θ = 0, float32; `{result['command']}`):",
        "",
        "| run | " + " | ".join(f"steps to {d}" for d in decades) + " |",
        "|---|" + "---:|" * len(decades),
    ]
    for name, per in result["max_abs_error_per_decade"].items():
        lines.append(f"| {name} | " + " | ".join(f"{per[d]:.1e}" for d in decades) + " |")
    (args.out / "resync_drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
