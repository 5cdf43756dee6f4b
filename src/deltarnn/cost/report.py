"""Cost reports built from the send counts a run observed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError
from ..functional import DeltaCounts
from . import neurobench
from .model import GATES, product_cost


def _ratio(dense: float, delta: float) -> float:
    return math.inf if delta == 0 else dense / delta


# LayerCost fields that are StepCost fields of the same name (counted over a whole run).
_COUNTED = (
    "dense_macs",
    "delta_macs",
    "dense_ops",
    "delta_ops",
    "dense_state_reads",
    "dense_state_writes",
    "delta_state_reads",
    "delta_state_writes",
)


def _ratios(cost: LayerCost | CostReport) -> dict[str, float | None]:
    """Occupancies and reductions for JSON: an infinite reduction (nothing sent) is None."""
    names = ("occupancy_x", "occupancy_h", "mac_reduction", "compute_speedup")
    names += ("weight_byte_reduction", "memory_speedup")
    return {n: None if math.isinf(getattr(cost, n)) else getattr(cost, n) for n in names}


def _ratio_of(dense: str, delta: str, doc: str) -> property:
    """A read-only ratio of two attributes (infinite when the delta side is 0)."""
    return property(lambda self: _ratio(getattr(self, dense), getattr(self, delta)), doc=doc)


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

    def _bytes(self, side: str) -> int:
        """Weight bytes plus state traffic of the ``"dense"`` or ``"delta"`` side."""
        state = getattr(self, f"{side}_state_reads") + getattr(self, f"{side}_state_writes")
        return getattr(self, f"{side}_weight_bytes") + state * self.act_bytes

    @property
    def dense_bytes(self) -> int:
        return self._bytes("dense")

    @property
    def delta_bytes(self) -> int:
        return self._bytes("delta")

    mac_reduction = _ratio_of("dense_macs", "delta_macs", "Dense over delta MACs.")
    compute_speedup = _ratio_of(
        "dense_ops", "delta_ops", "Dense over delta operations (with the 2n encoding term)."
    )
    weight_byte_reduction = _ratio_of(
        "dense_weight_bytes", "delta_weight_bytes", "Dense over delta weight bytes."
    )
    memory_speedup = _ratio_of(
        "dense_bytes", "delta_bytes", "Dense over delta bytes moved (weights and state)."
    )

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
        d.update(_ratios(self))
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
    """Count a layer's cost from the send counts of a run (the formula of :func:`product_cost`).

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
    c = product_cost(rows, columns, sent_x + sent_h, steps=sample_steps)
    shape = (layer, kind, input_size, hidden_size, sample_steps, sent_x, sent_h)
    cost = LayerCost(
        *shape,
        dense_weight_bytes=c.dense_weight_reads * weight_bytes,
        delta_weight_bytes=c.delta_weight_reads * weight_bytes,
        act_bytes=act_bytes,
        **{name: getattr(c, name) for name in _COUNTED},
    )
    if valid is None:
        # A batched engine fetches, at each step, the union of the samples' active columns once.
        union = product_cost(
            rows, columns, int(counts.ux.sum() + counts.uh.sum()), counts.ux.numel()
        )
        cost.dense_weight_bytes_batched = union.dense_weight_reads * weight_bytes
        cost.delta_weight_bytes_batched = union.delta_weight_reads * weight_bytes
    return cost


def valid_steps(lengths: Tensor | None, steps: int, batch: int) -> Tensor | None:
    """(T, B) bool mask of the steps inside each sequence, from (B,) ``lengths`` (``None``: all).

    Raises:
        ConfigError: ``lengths`` is not an integer tensor, or a length is outside [0, T].
        ShapeError: ``lengths`` is not of shape (B,).
    """
    if lengths is None:
        return None
    if (
        not isinstance(lengths, Tensor)
        or lengths.dtype == torch.bool
        or (lengths.is_floating_point() or lengths.is_complex())
    ):
        got = f"dtype {lengths.dtype}" if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ConfigError(f"lengths must be an integer tensor of shape (B,), got {got}")
    if lengths.shape != (batch,):
        raise ShapeError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    bad = (lengths < 0) | (lengths > steps)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ConfigError(
            f"lengths must be in [0, T={steps}] (the input's steps), got "
            f"lengths[{i}]={int(lengths[i])}"
        )
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]


@runtime_checkable
class DeltaModule(Protocol):
    """What the accountant reads from a delta module: :class:`~deltarnn.DeltaGRU`,
    :class:`~deltarnn.DeltaLSTM` and their cells satisfy it."""

    mode: str
    num_layers: int
    last_backend: str | None

    def layer_sizes(self, k: int) -> tuple[int, int]: ...

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]: ...

    def stream(self, input: Tensor, state=None, *, count: bool = False): ...


@dataclass
class CostReport:
    """Per-layer and total cost of a delta network over a run. ``str(report)`` is a table.

    ``footprint_bytes`` and ``connection_sparsity`` describe the module (see
    :mod:`deltarnn.cost.neurobench`); :meth:`from_counts` fills them in.
    """

    layers: list[LayerCost] = field(default_factory=list)
    backend: str | None = None
    footprint_bytes: int | None = None
    connection_sparsity: float | None = None

    @classmethod
    def from_counts(
        cls,
        module: DeltaModule,
        counts: Sequence[DeltaCounts],
        *,
        lengths: Tensor | None = None,
        weight_bytes: int | None = None,
        act_bytes: int | None = None,
    ) -> CostReport:
        """The report of a run that already happened, from the counts it returned.

        ``out, state, counts = module.stream(x, count=True)`` (or a model run with
        ``count=True``) gives the counts; this builds the same report :func:`~deltarnn.measure`
        would, without running the network again.

        Args:
            module: the delta module that produced ``counts`` (for its shapes and dtype).
            counts: one :class:`~deltarnn.functional.DeltaCounts` per layer, (T, B) each.
            lengths: optional (B,) valid lengths of padded sequences; padded steps do not count.
            weight_bytes: bytes per weight (default: the parameters' element size).
            act_bytes: bytes per activation element (default: the parameters' element size).
        """
        require_delta_module(module)
        if len(counts) != module.num_layers:
            raise ShapeError(
                f"counts must have one entry per layer ({module.num_layers}), got {len(counts)}"
            )
        like = module.layer_weights(0)[0]
        weight_bytes = _positive_bytes("weight_bytes", weight_bytes, like.element_size())
        act_bytes = _positive_bytes("act_bytes", act_bytes, like.element_size())
        steps, batch = counts[0].nx.shape
        valid = valid_steps(lengths, steps, batch)
        if valid is not None:
            valid = valid.to(counts[0].nx.device)
        layers = []
        for k, c in enumerate(counts):
            features, hidden = module.layer_sizes(k)
            layers.append(
                layer_cost_from_counts(
                    k, module.mode, features, hidden, c, weight_bytes, act_bytes, valid
                )
            )
        return cls(
            layers,
            backend=module.last_backend,
            footprint_bytes=neurobench.footprint_bytes(module, weight_bytes, act_bytes),
            connection_sparsity=neurobench.connection_sparsity(module),
        )

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

    @property
    def effective_macs(self) -> int:
        """NeuroBench's effective MACs: those with a non-zero activation, i.e. the delta MACs."""
        return self.total("delta_macs")

    @property
    def activation_sparsity(self) -> float:
        """NeuroBench's activation sparsity: the fraction of zero deltas (x and h together)."""
        offered = sum(x.steps * (x.input_size + x.hidden_size) for x in self.layers)
        sent = sum(x.sent_x + x.sent_h for x in self.layers)
        return 1.0 - sent / max(1, offered)

    def __add__(self, other: CostReport) -> CostReport:
        if len(self.layers) != len(other.layers):
            raise ValueError("can only add reports of the same network")
        return CostReport(
            [a + b for a, b in zip(self.layers, other.layers, strict=True)],
            self.backend,
            self.footprint_bytes,
            self.connection_sparsity,
        )

    def to_dict(self) -> dict:
        totals = _ratios(self)
        for name in ("dense_macs", "delta_macs", "dense_weight_bytes", "delta_weight_bytes"):
            totals[name] = self.total(name)
        return {
            "backend": self.backend,
            "layers": [x.to_dict() for x in self.layers],
            "total": totals,
            "neurobench": {
                "effective_macs": self.effective_macs,
                "activation_sparsity": self.activation_sparsity,
                "footprint_bytes": self.footprint_bytes,
                "connection_sparsity": self.connection_sparsity,
            },
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


def require_delta_module(module: object) -> None:
    """Raise :class:`~deltarnn.errors.ConfigError` unless ``module`` is a delta module."""
    if not isinstance(module, DeltaModule):
        raise ConfigError(
            "module must be a delta module (convert torch modules with deltarnn.from_torch), "
            f"got {type(module).__name__}"
        )


def _positive_bytes(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


def _fmt(ratio: float) -> str:
    return "inf" if math.isinf(ratio) else f"{ratio:.2f}x"
