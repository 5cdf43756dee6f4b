"""Results of experiments: a typed row, a locked results file, summaries, tables and plots.

Every experiment and ``deltarnn sweep`` writes one :class:`Row` per evaluated model into a
``results.json``; a :class:`ReportSpec` (title, metric direction, loss budget, target) tells
:func:`render` how to summarise them over seeds, pick the best configuration within the budget,
and draw the table and the plot (PNG, PDF or SVG by the file's suffix).

Redraw from the command line::

    python -m deltarnn.train.results results.json --title "FSDD" --target 9 --budget 0.01 \\
        --percent --table table.md --plot plot.png --plot plot.pdf
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# Metrics where larger is better; every other metric name is an error or a distance.
HIGHER_IS_BETTER = frozenset({"accuracy", "string_accuracy", "r2"})
METHOD_ORDER = (
    "dense",
    "control",
    "converted",
    "rounding",
    "noise",
    "delta",
    "delta_l1",
    "delta_l1_strong",
    "learnable",
)
REDUCTIONS = ("mac_reduction", "ops_reduction", "byte_reduction", "memory_reduction")


@dataclasses.dataclass
class Row:
    """One evaluated model: what it is, its test (and validation) metric, and what it cost.

    Reductions are dense over delta (``None`` where the delta side is 0, i.e. infinite):
    ``mac_reduction`` multiply-accumulates, ``ops_reduction`` operations with the 2n encoding
    term of the paper's cost model, ``byte_reduction`` weight bytes, ``memory_reduction`` all
    bytes moved. ``extra`` holds an experiment's own numbers.
    """

    task: str
    split: str
    method: str
    theta_x: float
    theta_h: float
    seed: int
    metric: str
    value: float
    dense_value: float | None
    mac_reduction: float | None
    byte_reduction: float | None
    occupancy_x: float
    occupancy_h: float
    ops_reduction: float | None = None
    memory_reduction: float | None = None
    val_value: float | None = None
    dense_val_value: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> tuple:
        """What identifies a row: a new row with the same key replaces the old one."""
        return (self.task, self.split, self.method, self.theta_x, self.theta_h, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        required -= {"extra"}
        if not isinstance(d, dict) or required - set(d):
            missing = sorted(required - set(d)) if isinstance(d, dict) else sorted(required)
            raise ConfigError(f"a results row needs the fields {missing}, got {d!r}")
        unknown = set(d) - fields
        if unknown:
            raise ConfigError(f"unknown results row fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_cost(cls, cost: dict[str, Any], **fields: Any) -> Row:
        """A row from a cost report's ``to_dict()`` and the other fields by name."""
        total = cost["total"]
        return cls(
            mac_reduction=total["mac_reduction"],
            byte_reduction=total["weight_byte_reduction"],
            ops_reduction=total["compute_speedup"],
            memory_reduction=total["memory_speedup"],
            occupancy_x=total["occupancy_x"],
            occupancy_h=total["occupancy_h"],
            **fields,
        )


def read_rows(path: str | Path) -> list[Row]:
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise ConfigError(f"{path}: a results file is a JSON list of rows")
    return [Row.from_dict(d) for d in data]


def append_rows(path: str | Path, rows: Iterable[Row]) -> None:
    """Merge ``rows`` into the results file (a row with the same key replaces the old one).

    Several experiments may write one file at once: the read-modify-write holds an exclusive
    lock, and the file is replaced atomically.
    """
    import fcntl

    path = Path(path)
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"deltarnn-results-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = {r.key for r in rows}
        merged = [r for r in read_rows(path) if r.key not in keys] + rows
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps([r.to_dict() for r in merged], indent=1) + "\n")
        os.replace(tmp, path)


# -- summaries ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    """How an experiment's rows are judged and drawn.

    Attributes:
        title: heads the table and the plot.
        target: the cost reduction the claim is about (a vertical line; ``None``: none).
        budget: the loss against dense allowed at the target, in the metric's units (``0.01`` is
            1 pp of accuracy), or relative to the dense value with ``relative``.
        relative: judge the loss as a fraction of the dense value.
        percent: the metric is a fraction shown in % (accuracy).
        reduction: which reduction the headline is (see :class:`Row`).
        select_on: choose the best configuration on ``"test"`` or on ``"val"`` values.
    """

    title: str = ""
    target: float | None = None
    budget: float = 0.01
    relative: bool = False
    percent: bool = False
    reduction: str = "mac_reduction"
    select_on: str = "test"

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.select_on not in ("test", "val"):
            raise ConfigError(f"select_on must be 'test' or 'val', got {self.select_on!r}")
        if not (math.isfinite(self.budget) and self.budget >= 0):
            raise ConfigError(f"budget must be finite and >= 0, got {self.budget!r}")


@dataclasses.dataclass
class Summary:
    """The rows of one configuration (task, split, method, Θx, Θh) over seeds."""

    task: str
    split: str
    method: str
    theta_x: float
    theta_h: float
    metric: str
    seeds: int
    value: float
    value_sd: float
    loss: float | None
    val_value: float | None
    val_loss: float | None
    reductions: dict[str, float]
    occupancy_x: float
    occupancy_h: float


def loss_against_dense(
    value: float, dense: float | None, metric: str, relative: bool
) -> float | None:
    """How much worse than dense (positive: worse), absolute or relative to the dense value."""
    if dense is None or value is None:
        return None
    loss = (dense - value) if metric in HIGHER_IS_BETTER else (value - dense)
    if relative:
        return loss / abs(dense) if dense else (0.0 if loss == 0 else math.inf)
    return loss


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return statistics.mean(values)


def _reductions(rows: Sequence[Row]) -> dict[str, float]:
    """Mean reductions over seeds. A MAC or weight-byte reduction of None means nothing was sent
    (infinite); an ops or memory reduction of None was not recorded (rows of older runs)."""
    out = {}
    for name in REDUCTIONS:
        values = [getattr(r, name) for r in rows]
        if name in ("mac_reduction", "byte_reduction"):
            out[name] = statistics.mean(math.inf if v is None else v for v in values)
        elif all(v is not None for v in values):
            out[name] = statistics.mean(values)
    return out


def summarise(rows: Sequence[Row], spec: ReportSpec) -> list[Summary]:
    """Mean (and sample SD) over seeds of every configuration, in method order."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.task, r.split, r.method, r.theta_x, r.theta_h)].append(r)
    out = []
    for (task, split, method, tx, th), rs in groups.items():
        values = [r.value for r in rs]
        metric = rs[0].metric
        losses = [loss_against_dense(r.value, r.dense_value, metric, spec.relative) for r in rs]
        val_losses = [
            loss_against_dense(r.val_value, r.dense_val_value, metric, spec.relative) for r in rs
        ]
        out.append(
            Summary(
                task=task,
                split=split,
                method=method,
                theta_x=tx,
                theta_h=th,
                metric=metric,
                seeds=len(rs),
                value=statistics.mean(values),
                value_sd=statistics.stdev(values) if len(values) > 1 else 0.0,
                loss=_mean(losses),
                val_value=_mean([r.val_value for r in rs]),
                val_loss=_mean(val_losses),
                reductions=_reductions(rs),
                occupancy_x=statistics.mean(r.occupancy_x for r in rs),
                occupancy_h=statistics.mean(r.occupancy_h for r in rs),
            )
        )
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    out.sort(key=lambda s: (s.task, s.split, order.get(s.method, len(order)), s.theta_x, s.theta_h))
    return out


def best_within(summaries: Sequence[Summary], spec: ReportSpec) -> Summary | None:
    """The non-dense configuration with the largest headline reduction whose mean loss (on the
    ``select_on`` values) is within the budget."""

    def loss(s: Summary) -> float | None:
        return s.val_loss if spec.select_on == "val" else s.loss

    ok = [
        s
        for s in summaries
        if s.method != "dense" and loss(s) is not None and loss(s) <= spec.budget + 1e-12
    ]
    return max(ok, key=lambda s: s.reductions.get(spec.reduction, 0.0)) if ok else None


# -- table and plot ----------------------------------------------------------------------------


def _groups(summaries: Sequence[Summary]) -> dict[tuple[str, str], list[Summary]]:
    groups: dict[tuple[str, str], list[Summary]] = defaultdict(list)
    for s in summaries:
        groups[(s.task, s.split)].append(s)
    return dict(groups)


def _x(v: float | None) -> str:
    return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.1f}x")


def _loss_text(loss: float | None, spec: ReportSpec) -> str:
    if loss is None:
        return "-"
    if spec.relative:
        return f"{100 * loss:+.1f}%"
    return f"{100 * loss:+.1f} pp" if spec.percent else f"{loss:+.4g}"


def _value_text(v: float | None, spec: ReportSpec, sd: float | None = None) -> str:
    if v is None:
        return "-"
    scale = 100 if spec.percent else 1
    text = f"{scale * v:.1f}" if spec.percent else f"{v:.4f}"
    if sd is not None:
        text += f" ± {scale * sd:.1f}" if spec.percent else f" ± {sd:.4f}"
    return text


def markdown_table(summaries: Sequence[Summary], spec: ReportSpec) -> str:
    """One table per (task, split), then the best configuration within the budget."""
    lines = []
    budget = _loss_text(spec.budget, spec).lstrip("+")
    for (task, split), rows in _groups(summaries).items():
        metric = rows[0].metric
        lines += [
            f"### {spec.title or task}: {task}, split {split} (metric: {metric}, mean ± sample SD "
            "over seeds)",
            "",
            f"| method | Θx | Θh | seeds | {metric} | loss vs dense | val {metric} "
            "| MAC reduction | ops reduction | weight-byte reduction | occupancy x | occupancy h |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in rows:
            lines.append(
                f"| {s.method} | {s.theta_x:g} | {s.theta_h:g} | {s.seeds} "
                f"| {_value_text(s.value, spec, s.value_sd)} | {_loss_text(s.loss, spec)} "
                f"| {_value_text(s.val_value, spec)} | {_x(s.reductions.get('mac_reduction'))} "
                f"| {_x(s.reductions.get('ops_reduction'))} "
                f"| {_x(s.reductions.get('byte_reduction'))} "
                f"| {100 * s.occupancy_x:.1f}% | {100 * s.occupancy_h:.1f}% |"
            )
        best = best_within(rows, spec)
        lines.append("")
        name = spec.reduction.replace("_", " ")
        if best is None:
            lines.append(f"No delta configuration is within {budget} of dense ({spec.select_on}).")
        else:
            reached = ""
            if spec.target is not None:
                met = best.reductions.get(spec.reduction, 0.0) >= spec.target
                reached = f": {'meets' if met else 'falls short of'} the {spec.target:g}x target"
            lines.append(
                f"Best within {budget} of dense (chosen on {spec.select_on}): {best.method} at "
                f"Θx = {best.theta_x:g}, Θh = {best.theta_h:g}, {metric} "
                f"{_value_text(best.value, spec)} ({_loss_text(best.loss, spec)}), "
                f"{_x(best.reductions.get(spec.reduction))} {name}{reached}."
            )
        lines.append("")
    return "\n".join(lines)


def plot(summaries: Sequence[Summary], spec: ReportSpec, paths: Sequence[str | Path]) -> None:
    """Metric against the headline reduction (log x), one panel per (task, split), one curve
    per method, the budget and the target marked; written to every path (format by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(summaries)
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    scale = 100 if spec.percent else 1
    for ax, ((task, split), rows) in zip(axes[0], groups.items(), strict=True):
        for method in dict.fromkeys(s.method for s in rows):
            pts = [
                s
                for s in rows
                if s.method == method and math.isfinite(s.reductions.get(spec.reduction, math.inf))
            ]
            pts.sort(key=lambda s: s.reductions[spec.reduction])
            if pts:
                ax.errorbar(
                    [p.reductions[spec.reduction] for p in pts],
                    [scale * p.value for p in pts],
                    yerr=[scale * p.value_sd for p in pts],
                    marker="*" if method == "dense" else "o",
                    markersize=11 if method == "dense" else 5,
                    capsize=2,
                    label=method,
                )
        dense = [s for s in rows if s.method == "dense"]
        if dense:
            d = dense[0].value
            sign = -1 if rows[0].metric in HIGHER_IS_BETTER else 1
            line = d + sign * (spec.budget * abs(d) if spec.relative else spec.budget)
            ax.axhline(scale * line, color="grey", ls="--", lw=1, label="dense ± budget")
        if spec.target is not None:
            ax.axvline(spec.target, color="red", ls=":", lw=1, label=f"target {spec.target:g}x")
        ax.set_xscale("log")
        ax.set_xlabel(f"{spec.reduction.replace('_', ' ')} vs dense (x, test set)")
        ax.set_ylabel(rows[0].metric + (" (%)" if spec.percent else ""))
        ax.set_title(f"{spec.title or task}, split {split}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)


def render(
    results: str | Path,
    spec: ReportSpec,
    table: str | Path | None = None,
    plots: Sequence[str | Path] = (),
) -> str:
    """Summarise a results file; write the markdown table and the plots; return the table."""
    summaries = summarise(read_rows(results), spec)
    if not summaries:
        raise ConfigError(f"{results}: no rows to render")
    text = markdown_table(summaries, spec)
    if table is not None:
        Path(table).write_text(text)
    if plots:
        plot(summaries, spec, plots)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render a results.json as a table and plots.")
    p.add_argument("results")
    p.add_argument("--title", default="")
    p.add_argument("--target", type=float, help="the reduction the claim is about")
    p.add_argument("--budget", type=float, default=0.01, help="allowed loss against dense")
    p.add_argument("--relative", action="store_true", help="the budget is relative to dense")
    p.add_argument("--percent", action="store_true", help="show the metric in %%")
    p.add_argument("--select-on", choices=("test", "val"), default="test")
    p.add_argument("--table")
    p.add_argument("--plot", action="append", default=[], help="PNG, PDF or SVG (repeatable)")
    args = p.parse_args(argv)
    spec = ReportSpec(
        args.title, args.target, args.budget, args.relative, args.percent, select_on=args.select_on
    )
    print(render(args.results, spec, args.table, args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
