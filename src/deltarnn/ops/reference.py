"""The reference backend: the functional spec itself. Runs anywhere, differentiable."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import functional as F
from ..errors import BackendError, ConfigError, DTypeError, ShapeError
from . import LayerParams
from .int8 import dequantize_columns, quantize_columns

NAME = "reference"
DIFFERENTIABLE = True
_LAYERS = {"GRU": F.delta_gru, "LSTM": F.delta_lstm}


def is_available() -> bool:
    return True


def supports(device: torch.device, dtype: torch.dtype, needs_grad: bool) -> bool:
    return True


def pack(
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    return weight_ih, weight_hh, bias_ih, bias_hh


def gru(x, state, packed, theta_x, theta_h, *, count=False, resync_every=0, h_transform=None):
    return _layer("GRU", x, state, packed, theta_x, theta_h, count, resync_every, h_transform)


def lstm(x, state, packed, theta_x, theta_h, *, count=False, resync_every=0, h_transform=None):
    return _layer("LSTM", x, state, packed, theta_x, theta_h, count, resync_every, h_transform)


def _layer(kind, x, state, packed, theta_x, theta_h, count, resync_every, h_transform):
    w_ih, w_hh, b_ih, b_hh = packed
    return _LAYERS[kind](
        x, state, w_ih, w_hh, theta_x, theta_h, bias_ih=b_ih, bias_hh=b_hh,
        resync_every=resync_every, count=count, h_transform=h_transform,
    )  # fmt: skip


class StackStreamer:
    """A stack of layers advanced one frame per :meth:`step` by the spec (any device, dtype).

    The backend protocol's stack streamer (see :mod:`deltarnn.ops`); each step runs
    :func:`deltarnn.functional.delta_gru` / ``delta_lstm`` with T = 1 layer after layer, without
    gradients. Its per-step cost is that of the spec (a few torch ops per layer): the compiled
    backends' streamers are the fast ones.

    Args:
        kind: ``"GRU"`` or ``"LSTM"``.
        layers: one :class:`~deltarnn.ops.LayerParams` per layer (copied).
        state: one layer state per layer, batch B.
        count: keep the last step's send counts (:meth:`counts`).
        weights: ``"float32"`` (the parameters' own dtype, whatever it is) or ``"int8"``
            (:func:`deltarnn.ops.int8.quantize_columns`, run on the dequantized weights).
        resync_every: period of the dense memory re-sync (:mod:`deltarnn.functional.state`).
    """

    def __init__(
        self,
        kind: str,
        layers: Sequence[LayerParams],
        state: tuple,
        *,
        count: bool = False,
        weights: str = "float32",
        resync_every: int = F.RESYNC_EVERY,
    ) -> None:
        if kind not in _LAYERS:
            raise ConfigError(f"kind must be 'GRU' or 'LSTM', got {kind!r}")
        if weights not in ("float32", "int8"):
            raise ConfigError(f"weights must be 'float32' or 'int8', got {weights!r}")
        self._run = _LAYERS[kind]
        self._state_type = F.DeltaLSTMState if kind == "LSTM" else F.DeltaGRUState
        with torch.no_grad():
            self._layers = [_layer_copy(p, weights) for p in layers]
        self._count, self._resync = count, resync_every
        like = self._layers[0].weight_ih
        self._frame_shape = None
        self._like = like
        self.load_state(state)
        self._counts: list | None = None

    @property
    def batch_size(self) -> int:
        return self._frame_shape[0]

    def load_state(self, state: tuple) -> None:
        """Continue from ``state`` (one layer state per layer); its tensors are copied."""
        if not isinstance(state, (tuple, list)) or len(state) != len(self._layers):
            raise ShapeError(
                f"state must be a tuple of {len(self._layers)} {self._state_type.__name__}"
            )
        for k, s in enumerate(state):
            if not isinstance(s, self._state_type):
                raise ShapeError(
                    f"state[{k}] must be a {self._state_type.__name__}, got {type(s).__name__}"
                )
        batch = state[0].h.shape[0]
        self._frame_shape = (batch, self._layers[0].weight_ih.shape[1])
        self._state = tuple(_copy_state(s) for s in state)

    def step(self, frame: Tensor, out: Tensor | None = None) -> Tensor:
        """Advance every layer by one frame (B, I); the last layer's h (B, H), fresh or ``out``."""
        if not isinstance(frame, Tensor) or tuple(frame.shape) != self._frame_shape:
            raise ShapeError(
                f"frame must be a tensor of shape {self._frame_shape} (B, I), got "
                f"{tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__}"
            )
        if frame.dtype != self._like.dtype or frame.device != self._like.device:
            raise DTypeError(
                f"frame must be {self._like.dtype} on {self._like.device}, got {frame.dtype} on "
                f"{frame.device}"
            )
        x = frame[None]
        states, counts = [], []
        with torch.no_grad():
            for params, s in zip(self._layers, self._state, strict=True):
                x, s, c = self._run(
                    x, s, params.weight_ih, params.weight_hh, params.theta_x, params.theta_h,
                    bias_ih=params.bias_ih, bias_hh=params.bias_hh, resync_every=self._resync,
                    count=self._count,
                )  # fmt: skip
                states.append(s)
                counts.append(c)
        self._state = tuple(states)
        self._counts = counts if self._count else None
        if out is None:
            return x[0]
        out.copy_(x[0])
        return out

    def state(self) -> tuple:
        """The per-layer states after the last step (copies)."""
        return tuple(_copy_state(s) for s in self._state)

    def counts(self) -> list[F.DeltaCounts]:
        """The last step's send counts, one :class:`~deltarnn.functional.DeltaCounts` per layer."""
        if not self._count:
            raise BackendError("counts() needs a streamer built with count=True")
        if self._counts is None:
            raise BackendError("counts() has nothing to report before the first step")
        return list(self._counts)


def _layer_copy(p: LayerParams, weights: str) -> LayerParams:
    """Detached copies of a layer's tensors (the weights dequantized from int8 if asked)."""

    def copy(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().clone()

    w_ih, w_hh = copy(p.weight_ih), copy(p.weight_hh)
    if weights == "int8":
        w_ih = dequantize_columns(*quantize_columns(w_ih))
        w_hh = dequantize_columns(*quantize_columns(w_hh))
    return LayerParams(
        w_ih, w_hh, copy(p.bias_ih), copy(p.bias_hh), copy(p.theta_x), copy(p.theta_h)
    )


def _copy_state(state):
    return type(state)(*(None if t is None else t.detach().clone() for t in state))
