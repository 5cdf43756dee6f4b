"""The command line every experiment script (``experiments/<name>/*.py``) shares."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence


def experiment_main(
    argv: Sequence[str] | None,
    description: str,
    config_cls: type,
    run: Callable[..., object],
    render: Callable[[str, str, str], str],
) -> int:
    """Parse the shared flags, then run the experiment or only redraw its table and plot.

    Flags: ``--out`` (the stages' run folders), ``--results`` (the results file), ``--config`` (a
    JSON file of ``config_cls`` fields), ``field=value`` overrides, ``--force`` (discard stages
    of another config), ``--render TABLE PLOT`` (only redraw from the results, PNG/PDF/SVG).

    Args:
        run: ``run(config, out, results, force=)``.
        render: ``render(results, table, plot) -> table text``.
    """
    from ..train.config import flat_config_fields

    p = argparse.ArgumentParser(description=description.strip().split("\n")[0])
    p.add_argument("--out", help="folder for the stages' run folders (needed to train)")
    p.add_argument("--results", required=True, help="results.json to append rows to")
    p.add_argument("--config", help=f"JSON file with {config_cls.__name__} fields")
    p.add_argument("set", nargs="*", help="field=value overrides (values parsed as JSON)")
    p.add_argument("--force", action="store_true", help="discard stages of another config")
    p.add_argument(
        "--render",
        nargs=2,
        metavar=("TABLE", "PLOT"),
        help="only write the table (markdown) and the plot (PNG, PDF or SVG), then exit",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.render:
        print(render(args.results, *args.render))
        return 0
    if not args.out:
        p.error("--out is required to run the experiment")
    config = config_cls(**flat_config_fields(config_cls, args.config, args.set))
    run(config, args.out, args.results, force=args.force)
    return 0
