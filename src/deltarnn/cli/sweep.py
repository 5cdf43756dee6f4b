"""``deltarnn sweep``: run a method x threshold x seed x split sweep, then its table and plot."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run a sweep file (resumable), append rows to its results.json, render table and plot"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="sweep file (.json or .toml), e.g. experiments/fsdd/sweep.json")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small models: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--render-only", action="store_true", help="only redraw table and plot")


def run(args: argparse.Namespace) -> int:
    from ..train.report import render
    from ..train.sweep import SweepConfig, run_sweep, set_threads

    set_threads(args.threads)
    sweep = SweepConfig.load(args.config)
    results = Path(sweep.results)

    def draw(path: Path) -> None:
        text = render(path, path.with_name("table.md"), path.with_name("plot.png"))
        print(text)
        print(f"wrote {path}, {path.with_name('table.md')}, {path.with_name('plot.png')}")

    if not args.render_only:
        run_sweep(sweep, progress=not args.quiet, render=draw)
    draw(results)
    return 0
