"""What an export holds: a trained delta model read into plain, checked arrays.

:func:`read_model` takes a :class:`~deltarnn.DeltaGRU` / :class:`~deltarnn.DeltaLSTM` (or one of
the cells), or a model with such an ``rnn`` and an ``nn.Linear`` ``head`` (a trained
``deltarnn.train.SequenceModel``), and returns an :class:`ExportedModel`: per layer the weights
in the column-contiguous layout of the CPU engine (``wx`` (I, G*H), ``wh`` (H, G*H): the G*H
weights input j feeds are one row), the initial memory (the biases), and the thresholds expanded
per feature. 8-bit weights use the one int8 scheme of every backend
(:func:`deltarnn.ops.int8.quantize_columns`: one scale per column), so the exported step computes
what the int8 streamers compute.

Anything the C step could not reproduce is refused here, before a file is written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, DTypeError, ShapeError, ThresholdError
from ..functional import MEMORY_BOUND, RESYNC_EVERY
from ..nn import DeltaGRU, DeltaLSTM
from ..ops.int8 import quantize_columns

if TYPE_CHECKING:  # importing the engine loads numba: only where a layer is packed
    from ..ops.cpu import CPUPacked

WEIGHTS = ("float32", "int8")
GATES = ("rational", "libm")
# Loop indices and sizes are C `int`, which is only guaranteed 16 bits: keep every size below it.
MAX_SIZE = 32767


@dataclass(frozen=True, eq=False)
class ExportedLayer:
    """One recurrent layer, as the C step reads it.

    Attributes:
        kind: ``"GRU"`` (gates r|z|n, memory ``[M_r | M_z | M_xn | M_hn]``) or ``"LSTM"``
            (i|f|g|o, memory ``[M_i | M_f | M_g | M_o]``).
        packed: the weights in the CPU engine's layout (:func:`deltarnn.ops.cpu.pack`): ``wx``
            (I, G*H) and ``wh`` (H, G*H), float32 or int8, row j holding the weights input j
            feeds; for int8 the column scales ``sx`` (I,) and ``sh`` (H,) of
            :func:`~deltarnn.ops.int8.quantize_columns` (column j is ``s[j] * w[j]``); ``m0``
            (4H,), the memory before anything was sent (from the biases).
        theta_x, theta_h: (I,) and (H,) float32 thresholds.
    """

    kind: str
    packed: CPUPacked
    theta_x: np.ndarray
    theta_h: np.ndarray

    @property
    def m0(self) -> np.ndarray:
        """(4H,) float32: the memory before anything was sent, which the re-sync starts from."""
        return self.packed.m0


@dataclass(frozen=True, eq=False)
class ExportedModel:
    """A layer stack and an optional linear head, checked and ready to write out.

    Attributes:
        layers: the recurrent layers, input first.
        head_w: (C, H) float32 weights of the linear head, or ``None`` (the step then outputs the
            last layer's h).
        head_b: (C,) float32 head bias, or ``None``.
        weights: ``"float32"`` or ``"int8"`` (the recurrent weights; the head stays float32).
        gates: ``"rational"`` (the CPU engine's float32 approximations, no libm) or ``"libm"``.
        resync_every: period of the dense re-sync of the memories in steps (0: only when a memory
            is not finite or exceeds ``memory_bound``), as the streamer applies it.
        memory_bound: a memory above this in magnitude is recomputed densely at the next step.
        pool: how the trained model pools the head's input (``"mean"``, ``"last"``), ``"frame"``
            for per-frame log-probabilities (CTC), ``"regression"`` for per-frame outputs used as
            they are, ``None`` without a head.
        source: a one-line description of the module exported.
    """

    layers: tuple[ExportedLayer, ...]
    head_w: np.ndarray | None
    head_b: np.ndarray | None
    weights: str
    gates: str
    resync_every: int
    memory_bound: float
    pool: str | None
    source: str

    @property
    def kind(self) -> str:
        return self.layers[0].kind

    @property
    def input_size(self) -> int:
        return self.layers[0].packed.input_size

    @property
    def output_size(self) -> int:
        return self.layers[-1].packed.hidden_size if self.head_w is None else self.head_w.shape[0]


def read_model(
    module: nn.Module,
    *,
    weights: str = "float32",
    gates: str = "rational",
    resync_every: int = RESYNC_EVERY,
) -> ExportedModel:
    """Read and check a delta model for export (see the module docstring).

    Raises:
        ConfigError: not a delta GRU/LSTM (or a model holding one as ``rnn``), bidirectional, with
            projections, with a training transform attached, a head that is not an
            ``nn.Linear`` of the right size, non-finite weights, an unknown ``weights``/``gates``.
        ShapeError: a parameter of the wrong shape. DTypeError: parameters not float32.
        ThresholdError: a threshold negative, non-finite, or of the wrong shape.
    """
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if gates not in GATES:
        raise ConfigError(f"gates must be one of {GATES}, got {gates!r}")
    if isinstance(resync_every, bool) or not isinstance(resync_every, int) or resync_every < 0:
        raise ConfigError(f"resync_every must be an int >= 0 (0: off), got {resync_every!r}")
    rnn, head, pool = _split(module)
    _check_supported(rnn)
    layers = tuple(_read_layer(rnn, k, weights) for k in range(rnn.num_layers))
    head_w = head_b = None
    if head is not None:
        head_w, head_b = _read_head(head, rnn.hidden_size)
    return ExportedModel(
        layers, head_w, head_b, weights, gates, resync_every, MEMORY_BOUND, pool,
        _describe(module, rnn),
    )  # fmt: skip


def _split(module: nn.Module) -> tuple[DeltaGRU | DeltaLSTM, nn.Module | None, str | None]:
    """(the delta RNN, the head or None, the pooling) of ``module``."""
    if isinstance(module, (DeltaGRU, DeltaLSTM)):
        return module, None, None
    rnn, head = getattr(module, "rnn", None), getattr(module, "head", None)
    if isinstance(rnn, (DeltaGRU, DeltaLSTM)):
        if head is not None and not isinstance(head, nn.Linear):
            raise ConfigError(
                f"module.head must be an nn.Linear (the head the C step applies per frame), got "
                f"{type(head).__name__}"
            )
        if head is None:
            return rnn, None, None
        per_frame = bool(getattr(module, "per_frame", False))
        config = getattr(module, "config", None)
        if per_frame:
            return rnn, head, "regression" if getattr(module, "regression", False) else "frame"
        return rnn, head, getattr(config, "pool", None)
    hint = ""
    if isinstance(module, (nn.GRU, nn.LSTM, nn.GRUCell, nn.LSTMCell)):
        hint = " (convert a torch module first with deltarnn.from_torch)"
    raise ConfigError(
        "module must be a DeltaGRU, DeltaLSTM, one of their cells, or a model with such an "
        f"`rnn` and an nn.Linear `head`, got {type(module).__name__}{hint}"
    )


def _check_supported(rnn: DeltaGRU | DeltaLSTM) -> None:
    if getattr(rnn, "bidirectional", False) or any(
        "_reverse" in n for n, _ in rnn.named_parameters()
    ):
        raise ConfigError(
            "a bidirectional RNN cannot be exported: the C step runs on a causal stream"
        )
    if getattr(rnn, "proj_size", 0) or any(
        n.startswith("weight_hr") for n, _ in rnn.named_parameters()
    ):
        raise ConfigError("proj_size must be 0: LSTM projections cannot be exported")
    if getattr(rnn, "deterministic", False):
        raise ConfigError(
            "the RNN has deterministic=True (layers computed in float64); the C step computes in "
            "float32: export a copy with deterministic=False (what the C step will compute)"
        )
    if rnn.transforms != (None, None):
        raise ConfigError(
            "the RNN has a training transform attached (set_transforms: fixed-point "
            "rounding, noise or learnable thresholds), which the C step would not apply; remove "
            "it (model.apply_method(MethodConfig()), or bake learned thresholds) before exporting"
        )


def _check_tensor(t: Tensor | None, name: str, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(t, Tensor):
        raise ShapeError(f"{name} must be a tensor of shape {shape}, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.dtype != torch.float32:
        raise DTypeError(
            f"{name} must be float32 (the C step computes in float), got {t.dtype}; "
            "call module.float() first"
        )
    t = t.detach().cpu()
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise ConfigError(f"{name} holds {bad} non-finite values (NaN or inf); cannot export it")
    return t


def _read_layer(rnn: DeltaGRU | DeltaLSTM, k: int, weights: str) -> ExportedLayer:
    inputs, hidden = rnn.layer_sizes(k)
    rows = rnn.gates * hidden
    if max(inputs, rows + hidden) > MAX_SIZE:
        raise ConfigError(
            f"layer {k} is too large for the C step ({rnn.gates}*H + H = {rows + hidden}, "
            f"I = {inputs}; each must be <= {MAX_SIZE})"
        )
    names = [rnn._param_name(n, k) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    w_ih, w_hh, b_ih, b_hh = rnn.layer_weights(k)
    w_ih = _check_tensor(w_ih, names[0], (rows, inputs))
    w_hh = _check_tensor(w_hh, names[1], (rows, hidden))
    if rnn.bias:
        b_ih = _check_tensor(b_ih, names[2], (rows,))
        b_hh = _check_tensor(b_hh, names[3], (rows,))
    else:
        b_ih = b_hh = None
    theta_x, theta_h = (
        _read_threshold(getattr(rnn, f"theta_{kind}_l{k}", None), f"theta_{kind}_l{k}", size)
        for kind, size in (("x", inputs), ("h", hidden))
    )
    from ..ops.cpu import pack  # here: importing the engine loads numba

    packed = pack(w_ih, w_hh, b_ih, b_hh)
    if weights == "int8":
        (wx, sx), (wh, sh) = quantize_columns(w_ih), quantize_columns(w_hh)
        packed = dataclasses.replace(
            packed, wx=wx.numpy(), sx=sx.numpy(), wh=wh.numpy(), sh=sh.numpy()
        )
    return ExportedLayer(rnn.mode, packed, theta_x, theta_h)


def _read_threshold(theta: Tensor | None, name: str, size: int) -> np.ndarray:
    """A threshold buffer (scalar or per feature) as (size,) float32, checked."""
    if not isinstance(theta, Tensor) or theta.dim() > 1 or theta.numel() not in (1, size):
        shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ThresholdError(f"{name} must be a scalar or of shape ({size},), got {shape}")
    values = theta.detach().cpu().to(torch.float64).expand(size)
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ThresholdError(f"{name} must be finite and >= 0 everywhere, got {values.tolist()}")
    out = values.to(torch.float32).numpy().copy()
    if not np.isfinite(out).all():  # finite in float64 but beyond float32's range
        raise ThresholdError(f"{name} exceeds float32's range, got {values.max().item()}")
    return out


def _read_head(head: nn.Linear, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    classes = head.out_features
    if head.in_features != hidden or classes > MAX_SIZE:
        raise ShapeError(
            f"head must be an nn.Linear({hidden}, C) with C <= {MAX_SIZE}, got "
            f"nn.Linear({head.in_features}, {classes})"
        )
    w = _check_tensor(head.weight, "head.weight", (classes, hidden)).numpy().copy()
    b = (
        np.zeros(classes, np.float32)
        if head.bias is None
        else _check_tensor(head.bias, "head.bias", (classes,)).numpy().copy()
    )
    return w, b


def _describe(module: nn.Module, rnn: DeltaGRU | DeltaLSTM) -> str:
    args = [str(rnn.input_size), str(rnn.hidden_size)]
    args += [f"num_layers={rnn.num_layers}"] if rnn.num_layers > 1 else []
    args += [] if rnn.bias else ["bias=False"]
    text = f"{type(rnn).__name__}({', '.join(args)})"
    if module is not rnn:
        text = f"{type(module).__name__} with {text}"
    return text


def threshold_summary(values: np.ndarray) -> str:
    """A threshold array in a few words: one value, or its range over the features."""
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return f"{_short(lo)} (all {values.size})"
    return f"{_short(lo)} to {_short(hi)} per feature ({values.size})"


def _short(v: float) -> str:
    return f"{v:.6g}" if math.isfinite(v) else str(v)
