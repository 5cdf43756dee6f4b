"""Command-line surface of the harness: ``add_arguments(parser)`` and ``run(args)``.

Wired as ``deltarnn bench``; also ``cli_main(argv)`` for scripts. ``--stream`` switches to the
per-frame latency benchmark of live streams (:mod:`deltarnn.bench.streaming`); the options both
share (sizes, occupancies, repeats, threads, output) then take its defaults.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import streaming
from .harness import METHODS, BenchConfig, run_benchmark
from .report import format_table, to_json, write


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark options to ``parser``."""
    defaults = BenchConfig()
    stream = streaming.StreamConfig()
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        help=f"hidden sizes H of the synthetic (GRU) cases (default {list(defaults.hidden_sizes)}; "
        f"--stream: {list(stream.gru_hidden)})",
    )
    parser.add_argument(
        "--input-size", type=int, default=None, help="input size I (default: I = H)"
    )
    parser.add_argument(
        "--occupancy",
        type=float,
        nargs="*",
        default=None,
        help=f"target occupancies of the synthetic cases, fractions in [0, 1] (default "
        f"{list(defaults.occupancies)}; --stream: {list(stream.occupancies)})",
    )
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed steps")
    parser.add_argument(
        "--prefix",
        type=int,
        default=None,
        help=f"untimed steps before the timed part (warm stream; default {defaults.prefix_steps})",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"default {defaults.repeats}; --stream: 3"
    )
    parser.add_argument("--warmup", type=int, default=None, help=f"default {defaults.warmup}")
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
    live = parser.add_argument_group(
        "live streams (--stream): per-frame latency, batch 1, methods interleaved"
    )
    live.add_argument("--stream", action="store_true", help="run the live-stream benchmark instead")
    live.add_argument("--frames", type=int, default=stream.frames, help="timed frames per stream")
    live.add_argument(
        "--block", type=int, default=stream.block, help="frames per interleaved block"
    )
    live.add_argument(
        "--lstm-hidden", type=int, nargs="*", default=list(stream.lstm_hidden),
        help="H of the LSTMCell(H, H) cases",
    )  # fmt: skip
    live.add_argument(
        "--stream-methods", nargs="+", choices=streaming.METHODS, default=list(stream.methods)
    )
    live.add_argument(
        "--fsdd-run", default=stream.fsdd_run,
        help="folder of the trained FSDD GRU (trained there, a few minutes, when it holds no "
        "selection; a `deltarnn train` folder with --fsdd-theta); 'none': no FSDD case",
    )  # fmt: skip
    live.add_argument("--fsdd-theta", type=float, default=None, help="Θ of a given run folder")
    live.add_argument(
        "--fsdd-files", type=int, default=stream.fsdd_files, help="test recordings (0: all)"
    )
    live.add_argument("--no-theta0", action="store_true", help="leave out the Θ = 0 cases")


SHARED = ("hidden", "occupancy", "prefix", "repeats", "warmup")


def _given(args: argparse.Namespace, defaults: tuple) -> dict:
    """The :data:`SHARED` options as given, else ``defaults`` (they differ between the modes)."""
    return {
        k: v if getattr(args, k) is None else getattr(args, k)
        for k, v in zip(SHARED, defaults, strict=True)
    }


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    d = BenchConfig()
    shared = _given(args, (d.hidden_sizes, d.occupancies, d.prefix_steps, d.repeats, d.warmup))
    return BenchConfig(
        hidden_sizes=tuple(shared["hidden"]),
        occupancies=tuple(shared["occupancy"]),
        input_size=args.input_size,
        batch=args.batch,
        steps=args.steps,
        prefix_steps=shared["prefix"],
        repeats=shared["repeats"],
        warmup=shared["warmup"],
        threads=args.threads,
        methods=tuple(args.methods),
        seed=args.seed,
        real_thetas=tuple(args.real_theta),
        real_hidden=args.real_hidden,
        real_files=args.real_files,
        data_root=args.data_root,
    )


def stream_config_from_args(args: argparse.Namespace) -> streaming.StreamConfig:
    d = streaming.StreamConfig()
    shared = _given(args, (d.gru_hidden, d.occupancies, d.prefix, d.repeats, d.warmup))
    return streaming.StreamConfig(
        occupancies=tuple(shared["occupancy"]),
        gru_hidden=tuple(shared["hidden"]),
        lstm_hidden=tuple(args.lstm_hidden),
        theta0=not args.no_theta0,
        frames=args.frames,
        prefix=shared["prefix"],
        block=args.block,
        repeats=shared["repeats"],
        warmup=shared["warmup"],
        threads=args.threads,
        methods=tuple(args.stream_methods),
        seed=args.seed,
        fsdd_run=None if args.fsdd_run in (None, "none") else args.fsdd_run,
        fsdd_theta=args.fsdd_theta,
        fsdd_files=args.fsdd_files,
    )


def run_stream(args: argparse.Namespace) -> int:
    """The live-stream benchmark: the table and the targets (or JSON) to stdout. Returns 0."""
    config = stream_config_from_args(args)
    rows, targets, info = streaming.run_streaming(config)
    document = streaming.to_json(rows, targets, config, info)
    table = "\n\n".join(
        (
            streaming.summary_table(rows),
            streaming.format_targets(targets),
            streaming.format_table(rows),
        )
    )
    if args.json not in (None, "-"):
        Path(args.json).write_text(document + "\n")
    if args.markdown is not None:
        Path(args.markdown).write_text(table + "\n")
    sys.stdout.write((document if args.json == "-" else table) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` describe; print the table (or JSON) to stdout. Returns 0."""
    if getattr(args, "stream", False):
        return run_stream(args)
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
