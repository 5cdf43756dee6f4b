"""Options that several subcommands share: thresholds per layer and fetching the data set."""

from __future__ import annotations

import argparse


def thresholds(text: str) -> float | list[float]:
    """``--theta-x 0.1`` (every layer) or ``--theta-x 0.1,0.2`` (one value per layer)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or comma-separated numbers (one per layer), got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def add_download_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the FSDD recordings into the data root first if they are not there",
    )


def fetch_fsdd(root: str | None = None) -> None:
    """For ``--download``: make sure the FSDD recordings are under ``root`` (or the data root)."""
    from ..data import download_fsdd

    download_fsdd(root)


def config_keys(config_type: type, prefix: str = "") -> list[str]:
    """``section.key = default`` for every field of a (nested) config dataclass."""
    import dataclasses

    lines = []
    for field in dataclasses.fields(config_type):
        default = (
            field.default_factory()
            if field.default is dataclasses.MISSING
            and field.default_factory is not dataclasses.MISSING
            else field.default
        )
        if dataclasses.is_dataclass(default):
            lines += config_keys(type(default), f"{prefix}{field.name}.")
        else:
            lines.append(f"  {prefix}{field.name} = {json_value(default)}")
    return lines


def json_value(value) -> str:
    """A default as it is written after ``--set KEY=`` (JSON)."""
    import json

    return json.dumps(value)


def add_threshold_arguments(p: argparse.ArgumentParser, default: str) -> None:
    """``--theta-x`` and ``--theta-h``: a number, or one per layer (``0.1,0.2``)."""
    for side in ("x", "h"):
        p.add_argument(
            f"--theta-{side}",
            type=thresholds,
            help=f"Θ{side}, a number or one per layer, e.g. 0.1,0.2 (default: {default})",
        )
