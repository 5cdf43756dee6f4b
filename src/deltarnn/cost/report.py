"""Cost reports built from the send counts a run observed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from torch import Tensor

from ..functional import DeltaCounts
from .model import GATES


def _ratio(dense: float, delta: float) -> float:
    return math.inf if delta == 0 else dense / delta


@dataclass
class LayerCost:
    """What one layer cost over a run, counted from the masks it observed.

    All totals are summed over every (valid) step and sample. ``*_weight_bytes`` count the weight
    columns fetched as a batch-1 engine fetches them (per sample); ``delta_weight_bytes_batched``
    counts the union of active columns over the batch at each step, fetched once for the batch
    (``None`` when sequences of different lengths were measured).
    """

    layer: int
    kind: str
    input_size: int
    hidden_size: int
    steps: int
    sent_x: int
    sent_h: int
    dense_macs: int
    delta_macs: int
    dense_ops: int
    delta_ops: int
    dense_weight_bytes: int
    delta_weight_bytes: int
    dense_state_reads: int
    dense_state_writes: int
    delta_state_reads: int
    delta_state_writes: int
    act_bytes: int
    dense_weight_bytes_batched: int | None = None
    delta_weight_bytes_batched: int | None = None

    @property
    def occupancy_x(self) -> float:
        return self.sent_x / max(1, self.steps * self.input_size)

    @property
    def occupancy_h(self) -> float:
        return self.sent_h / max(1, self.steps * self.hidden_size)

    @property
    def dense_bytes(self) -> int:
        return (
            self.dense_weight_bytes
            + (self.dense_state_reads + self.dense_state_writes) * self.act_bytes
        )

    @property
    def delta_bytes(self) -> int:
        return (
            self.delta_weight_bytes
            + (self.delta_state_reads + self.delta_state_writes) * self.act_bytes
        )

    @property
    def mac_reduction(self) -> float:
        return _ratio(self.dense_macs, self.delta_macs)

    @property
    def compute_speedup(self) -> float:
        return _ratio(self.dense_ops, self.delta_ops)

    @property
    def weight_byte_reduction(self) -> float:
        return _ratio(self.dense_weight_bytes, self.delta_weight_bytes)

    @property
    def memory_speedup(self) -> float:
        return _ratio(self.dense_bytes, self.delta_bytes)

    def __add__(self, other: LayerCost) -> LayerCost:
        """Totals of two runs of the same layer (e.g. two batches of a test set)."""
        if (self.layer, self.kind, self.input_size, self.hidden_size) != (
            other.layer,
            other.kind,
            other.input_size,
            other.hidden_size,
        ):
            raise ValueError("can only add the costs of the same layer")
        summed = {}
        for name, value in asdict(self).items():
            if name in ("layer", "kind", "input_size", "hidden_size", "act_bytes"):
                summed[name] = value
            elif value is None or getattr(other, name) is None:
                summed[name] = None
            else:
                summed[name] = value + getattr(other, name)
        return LayerCost(**summed)

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in (
            "occupancy_x",
            "occupancy_h",
            "mac_reduction",
            "compute_speedup",
            "weight_byte_reduction",
            "memory_speedup",
        ):
            value = getattr(self, name)
            d[name] = None if math.isinf(value) else value
        d["dense_bytes"], d["delta_bytes"] = self.dense_bytes, self.delta_bytes
        return d


def layer_cost_from_counts(
    layer: int,
    kind: str,
    input_size: int,
    hidden_size: int,
    counts: DeltaCounts,
    weight_bytes: int,
    act_bytes: int,
    valid: Tensor | None = None,
) -> LayerCost:
    """Count a layer's cost from the send counts of a run.

    Args:
        counts: from a run with ``count=True``; ``nx``/``nh`` of shape (T, B).
        weight_bytes, act_bytes: bytes per weight and per activation element.
        valid: optional bool mask (T, B) of the real (not padded) steps of each sample.
    """
    rows = GATES[kind] * hidden_size
    columns = input_size + hidden_size
    nx, nh = counts.nx, counts.nh
    if valid is not None:
        nx, nh = nx * valid, nh * valid
        sample_steps = int(valid.sum())
    else:
        sample_steps = nx.numel()
    sent_x, sent_h = int(nx.sum()), int(nh.sum())
    delta_macs = rows * (sent_x + sent_h)
    dense_macs = rows * columns * sample_steps
    cost = LayerCost(
        layer=layer,
        kind=kind,
        input_size=input_size,
        hidden_size=hidden_size,
        steps=sample_steps,
        sent_x=sent_x,
        sent_h=sent_h,
        dense_macs=dense_macs,
        delta_macs=delta_macs,
        dense_ops=dense_macs,
        delta_ops=delta_macs + 2 * columns * sample_steps,
        dense_weight_bytes=dense_macs * weight_bytes,
        delta_weight_bytes=delta_macs * weight_bytes,
        dense_state_reads=columns * sample_steps,
        dense_state_writes=0,
        delta_state_reads=2 * columns * sample_steps,
        delta_state_writes=2 * columns * sample_steps,
        act_bytes=act_bytes,
    )
    if valid is None:
        steps = counts.ux.numel()
        cost.dense_weight_bytes_batched = rows * columns * steps * weight_bytes
        cost.delta_weight_bytes_batched = (
            rows * int(counts.ux.sum() + counts.uh.sum()) * weight_bytes
        )
    return cost


@dataclass
class CostReport:
    """Per-layer and total cost of a delta network over a run. ``str(report)`` is a table."""

    layers: list[LayerCost] = field(default_factory=list)
    backend: str | None = None

    def total(self, name: str) -> int | None:
        values = [getattr(layer, name) for layer in self.layers]
        return None if any(v is None for v in values) else sum(values)

    @property
    def mac_reduction(self) -> float:
        return _ratio(self.total("dense_macs"), self.total("delta_macs"))

    @property
    def compute_speedup(self) -> float:
        return _ratio(self.total("dense_ops"), self.total("delta_ops"))

    @property
    def weight_byte_reduction(self) -> float:
        return _ratio(self.total("dense_weight_bytes"), self.total("delta_weight_bytes"))

    @property
    def memory_speedup(self) -> float:
        return _ratio(
            sum(x.dense_bytes for x in self.layers), sum(x.delta_bytes for x in self.layers)
        )

    @property
    def occupancy_x(self) -> float:
        """Occupancy of all layers' inputs together (sent / offered elements)."""
        offered = sum(x.steps * x.input_size for x in self.layers)
        return sum(x.sent_x for x in self.layers) / max(1, offered)

    @property
    def occupancy_h(self) -> float:
        offered = sum(x.steps * x.hidden_size for x in self.layers)
        return sum(x.sent_h for x in self.layers) / max(1, offered)

    def __add__(self, other: CostReport) -> CostReport:
        if len(self.layers) != len(other.layers):
            raise ValueError("can only add reports of the same network")
        return CostReport(
            [a + b for a, b in zip(self.layers, other.layers, strict=True)], self.backend
        )

    def to_dict(self) -> dict:
        totals = {}
        for name in (
            "mac_reduction",
            "compute_speedup",
            "weight_byte_reduction",
            "memory_speedup",
            "occupancy_x",
            "occupancy_h",
        ):
            value = getattr(self, name)
            totals[name] = None if math.isinf(value) else value
        for name in ("dense_macs", "delta_macs", "dense_weight_bytes", "delta_weight_bytes"):
            totals[name] = self.total(name)
        return {
            "backend": self.backend,
            "layers": [x.to_dict() for x in self.layers],
            "total": totals,
        }

    def table(self) -> str:
        """A fixed-width table: one row per layer and a total row."""
        header = (
            f"{'layer':>5} {'kind':>4} {'I':>5} {'H':>5} {'occ x':>6} {'occ h':>6} "
            f"{'dense MAC':>11} {'delta MAC':>11} {'MAC x':>7} {'dense W MB':>10} "
            f"{'delta W MB':>10} {'bytes x':>7} {'ops x':>7}"
        )
        lines = [header, "-" * len(header)]

        def row(label, kind, i, h, ox, oh, dm, tm, dw, tw, mem, ops):
            return (
                f"{label:>5} {kind:>4} {i:>5} {h:>5} {ox:6.1%} {oh:6.1%} {dm:11.4g} {tm:11.4g} "
                f"{_fmt(_ratio(dm, tm)):>7} {dw / 1e6:10.3f} {tw / 1e6:10.3f} {_fmt(mem):>7} {_fmt(ops):>7}"
            )

        for x in self.layers:
            lines.append(
                row(
                    x.layer, x.kind, x.input_size, x.hidden_size, x.occupancy_x, x.occupancy_h,
                    x.dense_macs, x.delta_macs, x.dense_weight_bytes, x.delta_weight_bytes,
                    x.memory_speedup, x.compute_speedup,
                )
            )  # fmt: skip
        if len(self.layers) > 1:
            lines.append(
                row(
                    "all", "", "", "", self.occupancy_x, self.occupancy_h,
                    self.total("dense_macs"), self.total("delta_macs"),
                    self.total("dense_weight_bytes"), self.total("delta_weight_bytes"),
                    self.memory_speedup, self.compute_speedup,
                )
            )  # fmt: skip
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _fmt(ratio: float) -> str:
    return "inf" if math.isinf(ratio) else f"{ratio:.2f}x"
