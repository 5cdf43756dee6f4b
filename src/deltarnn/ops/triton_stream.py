"""The Triton stack streamer: every layer of a delta GRU/LSTM stack advanced one frame per call,
on a GPU as **one CUDA-graph replay per frame**. It is the ``triton`` backend's
``StackStreamer`` (the protocol of :mod:`deltarnn.ops`), exported by :mod:`deltarnn.ops.triton`.

Each layer is a :class:`~deltarnn.ops.triton.TritonStreamer` (its two step kernels, preallocated
buffers); layer k reads its frames straight from the h buffer of layer k-1, so a frame of the
whole stack is one copy of the input frame, then the kernels of every layer in order, captured
once in a graph per parity of the double-buffered ĥ/Δh (and, with counts, the count reductions).

Shape legend: B batch, I input features of the first layer, H hidden units of a layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import BackendError, ConfigError, DeviceError, DTypeError, ShapeError
from ..functional import RESYNC_EVERY, DeltaCounts, DeltaGRUState, DeltaLSTMState
from .int8 import dequantize_columns, quantize_columns
from .triton import TritonStreamer, _use_graph, pack
from .triton_common import capture_graph, device_guard

KINDS = {"GRU": 3, "LSTM": 4}


def _plain(theta: Tensor | float) -> Tensor | float:
    return theta.detach() if isinstance(theta, Tensor) else theta


class StackStreamer:
    """A stack of delta GRU or LSTM layers run one frame at a time (the ``triton`` backend's
    stack streamer; see :mod:`deltarnn.ops` for the protocol).

    One :meth:`step` equals :func:`deltarnn.functional.delta_gru` / ``delta_lstm`` with T = 1,
    layer after layer, over that frame (float32 state and products whatever the weights'
    dtype). On CUDA it is one copy of the frame and one CUDA-graph replay for the whole stack.

    Args:
        kind: ``"GRU"`` or ``"LSTM"``.
        layers: per layer, an object with ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H),
            ``bias_ih``, ``bias_hh`` (G*H,) or ``None``, ``theta_x`` (I,) and ``theta_h`` (H,)
            (read once, at construction: the kernels' packed copy is made here).
        state: one :class:`~deltarnn.functional.DeltaGRUState` / ``DeltaLSTMState`` per layer,
            batch B.
        count: keep the last step's send counts (:meth:`counts`).
        weights: ``"float32"`` (the weights' own dtype: float32, float16 or bfloat16) or
            ``"int8"``: the weights quantized per column as
            :func:`deltarnn.ops.int8.quantize_columns` does, run dequantized (the results of
            8-bit weights; the bytes read per column are those of the float weights).
        resync_every: period of the dense memory re-sync (0: only the bound rule), as in
            :func:`deltarnn.functional.delta_gru`.
        use_graph: capture CUDA graphs (default: on CUDA).

    Example::

        streamer = StackStreamer("GRU", layers, states)
        for frame in frames:              # (B, I)
            h = streamer.step(frame)      # (B, H) of the last layer, a fresh tensor
    """

    def __init__(
        self,
        kind: str,
        layers: Sequence,
        state: Sequence,
        *,
        count: bool = False,
        weights: str = "float32",
        resync_every: int = RESYNC_EVERY,
        use_graph: bool | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"kind must be 'GRU' or 'LSTM', got {kind!r}")
        if weights not in ("float32", "int8"):
            raise ConfigError(f"weights must be 'float32' or 'int8', got {weights!r}")
        if len(layers) == 0:
            raise ShapeError("layers must hold at least one layer")
        self.kind = kind
        self._state_type = DeltaLSTMState if kind == "LSTM" else DeltaGRUState
        self._check_state(state, len(layers))
        first = layers[0].weight_ih
        self.device, self.dtype = first.device, first.dtype
        self._count = count
        self._streamers: list[TritonStreamer] = []
        with torch.no_grad(), device_guard(self.device):
            for k, (params, s) in enumerate(zip(layers, state, strict=True)):
                w_ih, w_hh = params.weight_ih.detach(), params.weight_hh.detach()
                if weights == "int8":
                    w_ih = dequantize_columns(*quantize_columns(w_ih))
                    w_hh = dequantize_columns(*quantize_columns(w_hh))
                packed = pack(w_ih, w_hh, params.bias_ih, params.bias_hh)
                if packed.gates != KINDS[kind]:
                    raise ShapeError(
                        f"layers[{k}] has {packed.gates} gates; {kind} needs {KINDS[kind]}"
                    )
                below = self._streamers[-1].h if self._streamers else None
                if below is not None and below.shape[1] != packed.inputs:
                    raise ShapeError(
                        f"layers[{k}] takes {packed.inputs} inputs but layer {k - 1} has "
                        f"{below.shape[1]} hidden units"
                    )
                streamer = TritonStreamer(
                    packed, s, _plain(params.theta_x), _plain(params.theta_h),
                    resync_every=resync_every, use_graph=False, frames=below,
                )  # fmt: skip
                self._streamers.append(streamer)
        self.batch_size = self._streamers[0].batch
        self._frame_shape = (self.batch_size, self._streamers[0].packed.inputs)
        self._counts = [self._count_buffers(s) for s in self._streamers] if count else None
        self._parity = 0
        self._graphs: list[torch.cuda.CUDAGraph] | None = None
        if _use_graph(self.device, use_graph):
            with device_guard(self.device):
                # Each capture's warm-up runs a step; load_state() then undoes their effect.
                self._graphs = [
                    capture_graph(lambda p=parity: self._launch(p))[0] for parity in (0, 1)
                ]
            self.load_state(state)

    def _check_state(self, state, layers: int) -> None:
        if not isinstance(state, (tuple, list)) or len(state) != layers:
            raise ShapeError(f"state must be a tuple of {layers} {self._state_type.__name__}")
        for k, s in enumerate(state):
            if not isinstance(s, self._state_type):
                raise ShapeError(
                    f"state[{k}] must be a {self._state_type.__name__}, got {type(s).__name__}"
                )

    def _count_buffers(self, streamer: TritonStreamer) -> DeltaCounts:
        batch, dev = streamer.batch, streamer.packed.device
        i64 = dict(dtype=torch.int64, device=dev)
        f32 = dict(dtype=torch.float32, device=dev)
        return DeltaCounts(
            torch.zeros(1, batch, **i64), torch.zeros(1, batch, **i64),
            torch.zeros(1, **i64), torch.zeros(1, **i64),
            torch.zeros(1, batch, **f32), torch.zeros(1, batch, **f32),
        )  # fmt: skip

    def _launch(self, parity: int) -> None:
        """Every layer's kernels for one frame (and the counts): what a graph captures."""
        for k, streamer in enumerate(self._streamers):
            streamer._launch(parity)
            if self._counts is not None:
                dx, dh = streamer.dx, streamer.dh[parity]
                sent_x, sent_h = dx != 0, dh != 0
                nx, nh, ux, uh, abs_x, abs_h = self._counts[k]
                nx[0].copy_(sent_x.sum(1))
                nh[0].copy_(sent_h.sum(1))
                ux.copy_(sent_x.any(0).sum())
                uh.copy_(sent_h.any(0).sum())
                abs_x[0].copy_(dx.abs().sum(1))
                abs_h[0].copy_(dh.abs().sum(1))

    def step(self, frame: Tensor, out: Tensor | None = None) -> Tensor:
        """Advance every layer by one frame.

        Args:
            frame: (B, I), the weights' dtype and device.
            out: optional (B, H) tensor to write the result into.

        Returns:
            The last layer's h (B, H) in the weights' dtype: a fresh tensor, or ``out``.
        """
        if not isinstance(frame, Tensor) or tuple(frame.shape) != self._frame_shape:
            got = tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__
            raise ShapeError(
                f"frame must be a tensor of shape {self._frame_shape} (B, I), got {got}"
            )
        if frame.dtype != self.dtype:
            raise DTypeError(f"frame must be {self.dtype}, got {frame.dtype}")
        if frame.device != self.device:
            raise DeviceError(f"frame must be on {self.device}, got {frame.device}")
        self._streamers[0].x.copy_(frame)
        if self._graphs is None:
            with device_guard(self.device):
                self._launch(self._parity)
        else:
            self._graphs[self._parity].replay()
        self._parity ^= 1
        for streamer in self._streamers:
            streamer.parity = self._parity
        h = self._streamers[-1].h
        if out is None:
            return h.to(self.dtype, copy=True)
        return out.copy_(h)

    def state(self) -> tuple:
        """The per-layer states after the last step (copies, in the states' dtype)."""
        return tuple(s.state() for s in self._streamers)

    def load_state(self, state: Sequence) -> None:
        """Continue from ``state`` (one layer state per layer, same batch and sizes; copied in)."""
        self._check_state(state, len(self._streamers))
        for streamer, s in zip(self._streamers, state, strict=True):
            streamer.reset(s)
        self._parity = 0

    def counts(self) -> list[DeltaCounts]:
        """The last step's send counts per layer, T = 1 (copies); needs ``count=True``."""
        if self._counts is None:
            raise BackendError("counts() needs a streamer built with count=True")
        return [DeltaCounts(*(t.clone() for t in c)) for c in self._counts]
