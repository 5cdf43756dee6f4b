"""The ``deltarnn`` command. Each subcommand is a module with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; add one by naming its module in :data:`COMMANDS`.

Conventions every subcommand keeps: machine output (JSON, tables) goes to stdout and prose to
stderr; an error prints one line and exits 2 (``-v`` adds the traceback); ``--help`` shows the
defaults. Only the chosen subcommand's options are built, and heavy imports stay inside ``run``,
so that ``deltarnn --help`` does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import DeltaRNNError

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

# What a user can get wrong: bad values, missing or unreadable files. Anything else is a bug
# and keeps its traceback.
USER_ERRORS = (DeltaRNNError, OSError, ValueError)

EXIT_ERROR = 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (config key lists)."""


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: …)`` to the help of every option that has a default worth showing."""
    for action in parser._actions:
        default = action.default
        if action.nargs == 0 or default in (None, argparse.SUPPRESS, [], ()):
            continue  # flags, help, version; options without a default
        if action.help == argparse.SUPPRESS or "%(default)" in (action.help or ""):
            continue
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        text = f"default: {shown}".replace("%", "%%")
        action.help = f"{action.help} ({text})" if action.help else text


def _verbose_parent() -> argparse.ArgumentParser:
    # -v is accepted after the subcommand too; SUPPRESS keeps a top-level -v from being reset.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log at DEBUG level and show tracebacks",
    )
    return parent


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, just those subcommands' options are built (fast help)."""
    parser = argparse.ArgumentParser(
        prog="deltarnn",
        description="Delta networks: train, cost and run recurrent networks that compute only what changed.",
        epilog="Run `deltarnn COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"deltarnn {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG level and show tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = _verbose_parent()
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            formatter_class=HelpFormatter,
            parents=[parent],
        )
        if only is None or name in only:
            module.add_arguments(p)
            show_defaults(p)
        p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: Sequence[str]) -> list[str]:
    """The subcommand named in ``argv``, if any (the top-level options take no values)."""
    for arg in argv:
        if not arg.startswith("-"):
            return [arg]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_in(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # which backend ran is in the reports; say so only when asked
        logging.getLogger("deltarnn.ops").setLevel(logging.WARNING)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        message = _describe(exc)
        if hasattr(args, "download") and _is_missing_data(exc):
            message += f" On the command line: `deltarnn {args.command} --download` fetches it."
        print(f"deltarnn {args.command}: error: {message}", file=sys.stderr)
        if not args.verbose:
            print("(run with -v for the traceback)", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"deltarnn {args.command}: interrupted", file=sys.stderr)
        return 130


def _is_missing_data(exc: BaseException) -> bool:
    from ..data.errors import DataNotFoundError  # imported on this path only: it pulls in torch

    return isinstance(exc, DataNotFoundError)


def _describe(exc: BaseException) -> str:
    """The message of ``exc``; OS errors without one (e.g. a bare errno) get their type."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename and exc.filename not in text:
        text = f"{text}: {exc.filename}"
    return text or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
