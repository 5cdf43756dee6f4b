"""Rows to a markdown table and to JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .harness import BenchConfig, BenchRow, environment

HEADER = (
    "| case | H | I | B | o_x | o_h | method | µs/step | vs nn.GRU | bound | of bound |",
    "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
)


def format_table(rows: Sequence[BenchRow]) -> str:
    """A markdown table, one line per row; occupancies in %, speed-ups as multiples."""
    lines = list(HEADER)
    for r in rows:
        fraction = "" if r.fraction_of_bound is None else f"{100 * r.fraction_of_bound:.0f}%"
        lines.append(
            f"| {r.case} | {r.hidden_size} | {r.input_size} | {r.batch} "
            f"| {100 * r.occupancy_x:.1f}% | {100 * r.occupancy_h:.1f}% | {r.method} "
            f"| {r.us_per_step:.1f} | {r.speedup:.2f}x | {r.bound:.2f}x | {fraction} |"
        )
    return "\n".join(lines)


def to_json(rows: Sequence[BenchRow], config: BenchConfig | None = None) -> str:
    """The rows as JSON, with the config and the environment they were measured in."""
    doc = {
        "environment": environment(),
        "config": None if config is None else _plain(config),
        "rows": [r.to_dict() for r in rows],
    }
    return json.dumps(doc, indent=1)


def write(rows: Sequence[BenchRow], config: BenchConfig, json_path=None, markdown_path=None):
    """Write the JSON document and/or the markdown table."""
    if json_path is not None:
        Path(json_path).write_text(to_json(rows, config) + "\n")
    if markdown_path is not None:
        Path(markdown_path).write_text(format_table(rows) + "\n")


def _plain(config: BenchConfig) -> dict:
    from dataclasses import asdict

    return asdict(config)
