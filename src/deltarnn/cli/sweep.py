"""``deltarnn sweep``: run a method x threshold x seed x split sweep, then its table and plot."""

from __future__ import annotations

import argparse

HELP = "run a sweep file (resumable), append rows to its results.json, render table and plot"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="sweep file (.json or .toml), e.g. experiments/fsdd/sweep.json")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small models: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--render-only", action="store_true", help="only redraw table and plot")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train.results import render
    from ..train.sweep import SweepConfig, run_sweep

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sweep = SweepConfig.load(args.config)

    def draw(path) -> None:
        table, plot = path.with_name("table.md"), path.with_name("plot.png")
        print(render(path, sweep.report, table, [plot]))
        print(f"wrote {path}, {table}, {plot}")

    if not args.render_only:
        run_sweep(sweep, progress=not args.quiet, render=draw)
    draw(sweep.results)
    return 0
