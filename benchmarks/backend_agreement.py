"""How closely each fast backend agrees with the reference (the spec), float32 and float64.

Random delta GRUs and LSTMs (sizes 1-64, 1-2 layers, batch 1-4, 64 steps) on inputs that walk
on the binary grid k/8, Θx = 3/16 (a grid midpoint, so input send decisions are exact) and several
Θh. For each backend and case: the largest |output - reference output| over all steps. A float32
backend computes h one rounding step away from the reference, so with Θh > 0 a hidden send
decision can land on the other side of Θh; from there the two runs differ by a fraction of Θh.

    python benchmarks/backend_agreement.py --cases 40 --json agreement.json

Prints one row per (dtype, Θh, backend): cases, median and max of the per-case max difference,
how many cases differ by more than 1e-5 (float32) / 1e-12 (float64), and in how many cases any
send count (per step and sample, any layer) differs from the reference's.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

import deltarnn
from deltarnn.ops import load_backend

CPU = torch.device("cpu")
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def case(seed: int, dtype: torch.dtype, theta_h: float):
    """A seeded module (on the reference backend) and its grid input, (T, B, I)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=gen))

    inputs, hidden, layers, batch = draw(1, 64), draw(1, 64), draw(1, 2), draw(1, 4)
    cls = deltarnn.DeltaGRU if draw(0, 1) else deltarnn.DeltaLSTM
    torch.manual_seed(seed)
    model = cls(inputs, hidden, layers, dtype=dtype, theta_x=[3 / 16] + [0.0] * (layers - 1),
                theta_h=theta_h, backend="reference")  # fmt: skip
    steps = torch.randint(-1, 2, (64, batch, inputs), generator=gen)
    x = (steps.cumsum(0).clamp(-8, 8)).to(dtype) / 8  # a walk on the grid k/8 in [-1, 1]
    return model, x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    backends = [b for b in ("cpu", "fused", "triton") if load_backend(b) is not None]
    rows = []
    for dtype in (torch.float32, torch.float64):
        for theta_h in (0.0, 0.05, 0.2):
            diffs: dict[str, list[float]] = {b: [] for b in backends}
            flips: dict[str, int] = dict.fromkeys(backends, 0)
            for seed in range(args.cases):
                model, x = case(seed, dtype, theta_h)
                with torch.no_grad():
                    expected, _, ref_counts = model.stream(x, count=True)
                    for backend in backends:
                        if not load_backend(backend).supports(CPU, dtype, needs_grad=False):
                            continue
                        model.backend = backend
                        got, _, counts = model.stream(x, count=True)
                        diffs[backend].append(float((got - expected).abs().max()))
                        flips[backend] += any(
                            not torch.equal(c.nx, r.nx) or not torch.equal(c.nh, r.nh)
                            for c, r in zip(counts, ref_counts, strict=True)
                        )
                        model.backend = "reference"
            for backend, d in diffs.items():
                if d:
                    rows.append({
                        "dtype": str(dtype).removeprefix("torch."), "theta_h": theta_h,
                        "backend": backend, "cases": len(d), "median": statistics.median(d),
                        "max": max(d), "over_tol": sum(v > TOL[dtype] for v in d),
                        "tol": TOL[dtype], "sends_differ": flips[backend],
                    })  # fmt: skip
    print("| dtype | Θh | backend | cases | median max diff | max diff | cases over tol "
          "| cases with a send decision unlike the reference's |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['theta_h']} | {r['backend']} | {r['cases']} | "
            f"{r['median']:.1e} | {r['max']:.1e} | {r['over_tol']} (> {r['tol']:.0e}) | "
            f"{r['sends_differ']} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
