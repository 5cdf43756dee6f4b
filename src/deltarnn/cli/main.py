"""The ``deltarnn`` command. Each subcommand is a module with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; add one by naming its module in :data:`COMMANDS`. Heavy imports stay
inside ``run`` so that ``deltarnn --help`` is instant."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import DeltaRNNError

log = logging.getLogger(__name__)

# subcommand name -> module that implements it
COMMANDS = {
    "cost": "deltarnn.cli.cost",
    "demo": "deltarnn.cli.demo",
    "train": "deltarnn.cli.train",
    "eval": "deltarnn.cli.eval",
    "sweep": "deltarnn.cli.sweep",
    "bench": "deltarnn.cli.bench",
    "export-c": "deltarnn.cli.export_c",
    "data": "deltarnn.cli.data",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltarnn",
        description="Delta networks: train, cost and run recurrent networks that compute only what changed.",
    )
    parser.add_argument("--version", action="version", version=f"deltarnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except DeltaRNNError as exc:  # a bad argument or file: the message names it
        log.debug("traceback", exc_info=True)
        print(f"deltarnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
