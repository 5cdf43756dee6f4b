"""Bytes an exported model takes on the device: constants (flash) and the state (RAM)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .model import ExportedModel

FLOAT_BYTES = 4


@dataclass(frozen=True)
class StateField:
    """One member of the C state struct: ``ctype name[size]`` (a scalar when ``size`` is 0)."""

    ctype: str
    name: str
    size: int
    comment: str

    @property
    def count(self) -> int:
        return max(self.size, 1)


def state_fields(model: ExportedModel) -> list[StateField]:
    """The members of ``<prefix>_state``, in order: per layer h, (c,) x̂, ĥ and the memories, then
    the counters."""
    fields = []
    for k, layer in enumerate(model.layers):
        h, i = layer.packed.hidden_size, layer.packed.input_size
        memory = "[M_r | M_z | M_xn | M_hn]" if layer.kind == "GRU" else "[M_i | M_f | M_g | M_o]"
        fields.append(StateField("float", f"l{k}_h", h, f"layer {k}: h_t"))
        if layer.kind == "LSTM":
            fields.append(StateField("float", f"l{k}_c", h, f"layer {k}: c_t"))
        fields += [
            StateField("float", f"l{k}_x_hat", i, f"layer {k}: last input values sent"),
            StateField("float", f"l{k}_h_hat", h, f"layer {k}: last hidden values sent"),
            StateField("float", f"l{k}_m", 4 * h, f"layer {k}: memories {memory}"),
        ]
    layers = len(model.layers)
    fields += [
        StateField("unsigned long", "sent_x", layers, "inputs sent at the last step, per layer"),
        StateField("unsigned long", "sent_h", layers, "hidden units sent at the last step"),
        StateField("unsigned long", "since_sync", layers, "steps since the last dense re-sync"),
        StateField("unsigned long", "steps", 0, "frames stepped since the last reset"),
    ]
    return fields


@dataclass(frozen=True)
class MemoryReport:
    """What an exported step needs, in bytes.

    Attributes:
        weights: the recurrent weight matrices as stored (4 bytes each in float32, 1 in int8).
        scales: the per-column scales of int8 weights (0 for float32).
        float32_weights: what the recurrent weights would take in float32 (for comparison).
        head: the linear head's weights and bias (always float32; 0 without a head).
        constants: initial memories (the biases) and thresholds.
        state_floats: floats in the state struct (h, c, x̂, ĥ, memories of every layer).
        state_counters: ``unsigned long`` counters in the state struct (send counts, steps).
    """

    weights: int
    scales: int
    float32_weights: int
    head: int
    constants: int
    state_floats: int
    state_counters: int

    @property
    def read_only(self) -> int:
        """Every constant: weights, scales, head, biases and thresholds (flash on a device)."""
        return self.weights + self.scales + self.head + self.constants

    def state_bytes(self, long_bytes: int = 4) -> int:
        """The state struct, for a target whose ``unsigned long`` has ``long_bytes`` bytes (4 on
        32-bit microcontrollers, 8 on 64-bit Linux); float is 4 bytes."""
        return FLOAT_BYTES * self.state_floats + long_bytes * self.state_counters

    def lines(self) -> list[str]:
        """The report as short lines (the CLI prints them; the header's comment holds them)."""
        ratio = self.float32_weights / self.weights if self.weights else 1.0
        weights = f"weights   {self.weights:,} B"
        if self.scales:
            weights += f" int8 + {self.scales:,} B scales ({ratio:.1f}x below float32's {self.float32_weights:,} B)"
        else:
            weights += " float32"
        return [
            weights,
            f"head      {self.head:,} B float32" if self.head else "head      none",
            f"biases and thresholds {self.constants:,} B",
            f"read-only total {self.read_only:,} B",
            f"state     {self.state_bytes(4):,} B ({self.state_floats:,} floats and "
            f"{self.state_counters} unsigned long counters; {self.state_bytes(8):,} B where "
            "unsigned long is 8 bytes)",
        ]

    def to_dict(self) -> dict[str, int]:
        return {
            **asdict(self),
            "read_only": self.read_only,
            "state_bytes_32bit": self.state_bytes(4),
            "state_bytes_64bit": self.state_bytes(8),
        }


def memory_report(model: ExportedModel) -> MemoryReport:
    """The bytes of an :class:`ExportedModel` as the C source stores it."""
    weights = scales = float_weights = constants = 0
    for layer in model.layers:
        w = layer.packed
        count = w.wx.size + w.wh.size
        weights += count * w.wx.itemsize
        float_weights += count * FLOAT_BYTES
        if w.quantized:
            scales += FLOAT_BYTES * (w.sx.size + w.sh.size)
        constants += FLOAT_BYTES * (layer.m0.size + layer.theta_x.size + layer.theta_h.size)
    head = 0 if model.head_w is None else FLOAT_BYTES * (model.head_w.size + model.head_b.size)
    fields = state_fields(model)
    floats = sum(f.count for f in fields if f.ctype == "float")
    counters = sum(f.count for f in fields if f.ctype == "unsigned long")
    return MemoryReport(weights, scales, float_weights, head, constants, floats, counters)
