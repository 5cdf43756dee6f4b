"""``deltarnn bench``: time delta engines against the dense baselines in one table."""

from __future__ import annotations

import argparse

HELP = (
    "time torch.nn.GRU, GRUCell, the reference and the compiled delta engines per step, "
    "side by side, with the cost model's bound"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..bench.cli import add_arguments as bench_arguments

    bench_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..bench.cli import run as bench_run

    return bench_run(args)
