"""Command-line surface of the harness: ``add_arguments(parser)`` and ``run(args)``.

Wired as ``deltarnn bench``; also ``cli_main(argv)`` for scripts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .harness import METHODS, BenchConfig, run_benchmark
from .report import format_table, to_json, write


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark options to ``parser``."""
    defaults = BenchConfig()
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(defaults.hidden_sizes),
        help="hidden sizes H of the synthetic cases",
    )
    parser.add_argument(
        "--input-size", type=int, default=None, help="input size I (default: I = H)"
    )
    parser.add_argument(
        "--occupancy",
        type=float,
        nargs="*",
        default=list(defaults.occupancies),
        help="target occupancies of the synthetic cases, fractions in [0, 1]",
    )
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed steps")
    parser.add_argument(
        "--prefix",
        type=int,
        default=defaults.prefix_steps,
        help="untimed steps before the timed part (warm stream)",
    )
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="torch and numba threads (default 1)"
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--real-theta",
        type=float,
        nargs="*",
        default=[],
        help="also run FSDD log-mel features at these thresholds (x and h)",
    )
    parser.add_argument("--real-hidden", type=int, default=defaults.real_hidden)
    parser.add_argument("--real-files", type=int, default=defaults.real_files)
    parser.add_argument(
        "--data-root", default=None, help="data root (default $DELTARNN_DATA, else ../shared/data)"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write JSON rows to PATH ('-' or no value: to stdout, no table)",
    )
    parser.add_argument(
        "--markdown", default=None, metavar="PATH", help="also write the markdown table to PATH"
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        hidden_sizes=tuple(args.hidden),
        occupancies=tuple(args.occupancy),
        input_size=args.input_size,
        batch=args.batch,
        steps=args.steps,
        prefix_steps=args.prefix,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        methods=tuple(args.methods),
        seed=args.seed,
        real_thetas=tuple(args.real_theta),
        real_hidden=args.real_hidden,
        real_files=args.real_files,
        data_root=args.data_root,
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` describe; print the table (or JSON) to stdout. Returns 0."""
    config = config_from_args(args)
    rows = run_benchmark(config)
    to_stdout = args.json == "-"
    write(rows, config, json_path=None if to_stdout else args.json, markdown_path=args.markdown)
    sys.stdout.write((to_json(rows, config) if to_stdout else format_table(rows)) + "\n")
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``python -m deltarnn.bench``-style entry point for scripts."""
    parser = argparse.ArgumentParser(
        prog="deltarnn bench", description="Time delta engines against dense baselines."
    )
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return run(args)
