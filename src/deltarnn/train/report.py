"""Render a sweep's ``results.json`` as a markdown table and a plot (accuracy vs cost reduction).

``python -m deltarnn.train.report results.json --table table.md --plot plot.png``
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

METHOD_ORDER = (
    "dense",
    "converted",
    "rounding",
    "noise",
    "delta",
    "delta_l1",
    "delta_l1_strong",
    "learnable",
)


def _order(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds for each (task, split, method, Θx, Θh)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["split"], r["method"], r["theta_x"], r["theta_h"])].append(r)
    out = []
    for (task, split, method, tx, th), rs in groups.items():
        values = [r["value"] for r in rs]
        loss = [
            (r["dense_value"] - r["value"]) * (1 if r["metric"] == "accuracy" else -1) for r in rs
        ]
        out.append(
            {
                "task": task,
                "split": split,
                "method": method,
                "theta_x": tx,
                "theta_h": th,
                "metric": rs[0]["metric"],
                "seeds": len(rs),
                "value": statistics.mean(values),
                "value_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                "loss_pp": 100 * statistics.mean(loss),
                "mac_reduction": statistics.mean(r["mac_reduction"] for r in rs),
                "byte_reduction": statistics.mean(r["byte_reduction"] for r in rs),
                "occupancy_x": statistics.mean(r["occupancy_x"] for r in rs),
                "occupancy_h": statistics.mean(r["occupancy_h"] for r in rs),
            }
        )
    out.sort(key=lambda s: (s["task"], s["split"], _order(s["method"]), s["theta_x"]))
    return out


def best_within(summary: list[dict], split: str, max_loss_pp: float = 1.0) -> dict | None:
    """The largest mean MAC reduction whose mean loss against dense is at most ``max_loss_pp``."""
    ok = [s for s in summary if s["split"] == split and s["loss_pp"] <= max_loss_pp]
    return max(ok, key=lambda s: s["mac_reduction"]) if ok else None


def markdown_table(summary: list[dict]) -> str:
    lines = []
    for split in sorted({s["split"] for s in summary}, key=lambda x: x != "speaker"):
        rows = [s for s in summary if s["split"] == split]
        metric = rows[0]["metric"]
        lines += [
            f"### split: {split} ({rows[0]['task']}, metric: {metric}, mean ± std over seeds)",
            "",
            f"| method | Θx | Θh | seeds | {metric} | loss vs dense (pp) | MAC reduction "
            "| weight-byte reduction | occupancy x | occupancy h |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in rows:
            lines.append(
                f"| {s['method']} | {s['theta_x']:g} | {s['theta_h']:g} | {s['seeds']} "
                f"| {100 * s['value']:.1f} ± {100 * s['value_std']:.1f} | {s['loss_pp']:+.1f} "
                f"| {s['mac_reduction']:.1f}x | {s['byte_reduction']:.1f}x "
                f"| {100 * s['occupancy_x']:.1f}% | {100 * s['occupancy_h']:.1f}% |"
            )
        best = best_within(summary, split)
        lines.append("")
        if best is not None:
            lines.append(
                f"Best within 1 pp of dense: {best['method']} at Θ = {best['theta_x']:g}: "
                f"{best['mac_reduction']:.1f}x fewer MACs, {best['loss_pp']:+.1f} pp."
            )
        lines.append("")
    return "\n".join(lines)


def plot(summary: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted({s["split"] for s in summary}, key=lambda x: x != "speaker")
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.5), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        rows = [s for s in summary if s["split"] == split]
        for method in sorted({s["method"] for s in rows}, key=_order):
            pts = sorted(
                (s for s in rows if s["method"] == method), key=lambda s: s["mac_reduction"]
            )
            ax.errorbar(
                [p["mac_reduction"] for p in pts],
                [100 * p["value"] for p in pts],
                yerr=[100 * p["value_std"] for p in pts],
                marker="o",
                capsize=2,
                label=method,
            )
        dense = [s for s in rows if s["method"] == "dense"]
        if dense and rows[0]["metric"] == "accuracy":
            ax.axhline(
                100 * dense[0]["value"] - 1, color="grey", ls="--", lw=1, label="dense - 1 pp"
            )
        ax.axvline(9, color="grey", ls=":", lw=1, label="9x")
        ax.set_xscale("log")
        ax.set_xlabel("MAC reduction vs dense (x, measured on the test set)")
        ax.set_ylabel(rows[0]["metric"] + " (%)")
        ax.set_title(f"FSDD {rows[0]['task']}, split by {split}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(results: str | Path, table: str | Path | None, plot_path: str | Path | None) -> str:
    rows = json.loads(Path(results).read_text())
    summary = summarise(rows)
    text = markdown_table(summary)
    if table is not None:
        Path(table).write_text(text)
    if plot_path is not None:
        plot(summary, plot_path)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--table")
    p.add_argument("--plot")
    args = p.parse_args(argv)
    print(render(args.results, args.table, args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
