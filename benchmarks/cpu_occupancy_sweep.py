"""CPU engine against torch.nn.GRU across occupancies (batch 1, one thread by default).

Runs, in one process and one table:

* H = I = 1024 at target occupancies 2, 5, 10, 20, 50, 100 %,
* H = I = 128 and 256 at 10 %,
* optionally (``--real``) FSDD log-mel features through a random GRU at a few thresholds,

and writes ``<out>.json`` (rows, config, environment) and ``<out>.md`` (the table).

    python benchmarks/cpu_occupancy_sweep.py --out benchmarks/results/cpu_occupancy_sweep
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from deltarnn.bench import BenchConfig, format_table, run_benchmark
from deltarnn.bench.report import write

LARGE = 1024
OCCUPANCIES = (0.02, 0.05, 0.10, 0.20, 0.50, 1.00)
SMALL = (128, 256)
SMALL_OCCUPANCY = 0.10
REAL_THETAS = (0.0, 0.1, 0.3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default="benchmarks/results/cpu_occupancy_sweep",
        help="output path without extension",
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--real", action="store_true", help="add FSDD log-mel cases")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    base = BenchConfig(steps=args.steps, repeats=args.repeats, threads=args.threads)
    configs = [
        replace(base, hidden_sizes=(LARGE,), occupancies=OCCUPANCIES),
        replace(base, hidden_sizes=SMALL, occupancies=(SMALL_OCCUPANCY,)),
    ]
    if args.real:
        configs.append(replace(base, hidden_sizes=(), real_thetas=REAL_THETAS))
    rows = []
    for config in configs:
        rows += run_benchmark(config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    combined = replace(
        base,
        hidden_sizes=(LARGE, *SMALL),
        occupancies=OCCUPANCIES,
        real_thetas=REAL_THETAS if args.real else (),
    )
    write(rows, combined, json_path=out.with_suffix(".json"), markdown_path=out.with_suffix(".md"))
    sys.stdout.write(format_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
