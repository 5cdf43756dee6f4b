"""The CPU backend's stack streamer: every layer of a delta GRU/LSTM stack advanced one frame per
call, in **one compiled (numba) call per frame**, with no allocation per step.

Shape legend: B batch, I input features of the first layer, H hidden units, G gates.

Each layer's state, thresholds, scales and work buffers are views of two flat buffers, whose
layout the compiled step reads from a table (see ``_cpu_kernels._stack_step``), with the
addresses of its packed weights (:func:`deltarnn.ops.cpu.pack` or
:func:`~deltarnn.ops.cpu.pack_int8`, read in place: a module's streamer shares the module's own
packed copy): a call passes the frame, the output and those few arrays, so numba's per-argument
dispatch stays cheap however many layers there are. Layer k reads its frame from layer k-1's output buffer; the last layer
writes straight into the tensor :meth:`StackStreamer.step` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, is_

import numpy as np
import torch
from torch import Tensor

from ..errors import BackendError, ConfigError, DeviceError, DTypeError, ShapeError
from ..functional import MEMORY_BOUND, RESYNC_EVERY, DeltaCounts, DeltaGRUState, DeltaLSTMState
from ..functional.checks import check_threshold
from ..functional.state import _NO_STEPS
from . import LayerParams
from .cpu import (
    BLOCK_BYTES,
    LEAN_OCCUPANCY,
    CPUPacked,
    _check_ready,
    _check_resync_every,
    _kernels,
    _since_array,
    _state_arrays,
    _threshold,
    pack,
    pack_int8,
)

_STATE_TYPES = {"GRU": DeltaGRUState, "LSTM": DeltaLSTMState}
_PACKERS = {"float32": pack, "int8": pack_int8}
_DATA_PTR = Tensor.data_ptr
_SINCE_SYNC = attrgetter("since_sync")


class _Arena:
    """Hands out consecutive regions of one flat buffer; :meth:`build` allocates it."""

    def __init__(self) -> None:
        self.size = 0

    def take(self, n: int) -> int:
        start = self.size
        self.size += n
        return start

    def build(self, dtype) -> np.ndarray:
        return np.zeros(max(self.size, 1), dtype)


class _Layer:
    """Where one layer's arrays live in the flat buffers, and NumPy views of its state."""

    def __init__(self, packed: CPUPacked, batch: int, row: np.ndarray):
        self.packed, self.batch, self.lstm = packed, batch, packed.gates == 4
        self.row = row
        inputs, hidden = packed.input_size, packed.hidden_size
        K = _kernels
        # the float fields of the layer state, in the order of its type's fields
        self.state_sizes = [(K.F_H, batch * hidden)]
        if self.lstm:
            self.state_sizes.append((K.F_C, batch * hidden))
        self.state_sizes += [
            (K.F_XHAT, batch * inputs), (K.F_HHAT, batch * hidden), (K.F_M, batch * 4 * hidden)
        ]  # fmt: skip

    def take_state(self, f: _Arena) -> None:
        for field, n in self.state_sizes:
            self.row[field] = f.take(n)

    def take_work(self, last: bool, arenas) -> None:
        """The rest: constants, counts and work buffers."""
        K, packed, batch, row = _kernels, self.packed, self.batch, self.row
        f, i = arenas
        inputs, hidden = packed.input_size, packed.hidden_size
        widest = max(inputs, hidden)
        rows = packed.wx.shape[1]
        row[K.L_INPUTS], row[K.L_HIDDEN] = inputs, hidden
        # the column block of the input products, as the sequence kernel's (cpu._work)
        row[K.L_BLOCK] = max(4, BLOCK_BYTES // max(rows * packed.np_dtype.itemsize, 1))
        for field, n in {
            K.F_M0: 4 * hidden, K.F_THETA_X: inputs, K.F_THETA_H: hidden, K.F_SX: inputs,
            K.F_SH: hidden, K.F_OUT: 0 if last else batch * hidden, K.F_VAL: widest,
            K.F_VAL_X: batch * inputs, K.F_GX: batch * rows, K.F_ABS_X: batch, K.F_ABS_H: batch,
        }.items():  # fmt: skip
            row[field] = f.take(n)
        for field, n in {
            K.I_SINCE: batch, K.I_IDX: widest, K.I_IDX_X: batch * inputs, K.I_SENT: batch,
            K.I_CURSOR: batch, K.I_SEEN_X: inputs, K.I_SEEN_H: hidden,
            K.I_MASK: (widest + 7) // 8, K.I_NX: batch, K.I_NH: batch, K.I_UX: 1, K.I_UH: 1,
        }.items():  # fmt: skip
            row[field] = i.take(n)
        row[K.W_X] = packed.wx.ctypes.data  # read in place (held by self.packed)
        row[K.W_H] = packed.wh.ctypes.data

    def bind(self, fbuf: np.ndarray, ibuf: np.ndarray) -> None:
        """Make the views of the state and counts, and copy the constant arrays in."""
        K, row, p = _kernels, self.row, self.packed
        inputs, hidden, batch = p.input_size, p.hidden_size, self.batch

        def view(buf, field, *shape):
            start = int(row[field])
            return buf[start : start + int(np.prod(shape))].reshape(shape)

        fields = [(K.F_H, hidden)]
        if self.lstm:
            fields.append((K.F_C, hidden))
        fields += [(K.F_XHAT, inputs), (K.F_HHAT, hidden), (K.F_M, 4 * hidden)]
        self.state = [view(fbuf, field, batch, n) for field, n in fields]
        self.since = view(ibuf, K.I_SINCE, batch)
        self.seen = (view(ibuf, K.I_SEEN_X, inputs), view(ibuf, K.I_SEEN_H, hidden))
        self.counts = (
            view(ibuf, K.I_NX, 1, batch), view(ibuf, K.I_NH, 1, batch),
            view(ibuf, K.I_UX, 1), view(ibuf, K.I_UH, 1),
            view(fbuf, K.F_ABS_X, 1, batch), view(fbuf, K.F_ABS_H, 1, batch),
        )  # fmt: skip
        view(fbuf, K.F_SX, inputs)[...] = p.sx
        view(fbuf, K.F_SH, hidden)[...] = p.sh
        view(fbuf, K.F_M0, 4 * hidden)[...] = p.m0
        self.theta_x = view(fbuf, K.F_THETA_X, inputs)
        self.theta_h = view(fbuf, K.F_THETA_H, hidden)


def _own_since(since: Tensor) -> Tensor:
    """A copy of a state's ``since_sync`` (the shared default of states that count no steps,
    which nothing can write, as is)."""
    return since if since is _NO_STEPS else since.detach().clone()


def _by_address(t, dtype: torch.dtype, shape) -> bool:
    """Whether the kernel can take ``t`` by its address: a dense, C-contiguous CPU tensor of
    ``dtype`` and ``shape``."""
    return (
        isinstance(t, Tensor)
        and t.dtype is dtype
        and t.is_cpu
        and t.layout is torch.strided
        and t.shape == shape
        and t.is_contiguous()
    )


class StackStreamer:
    """A stack of delta GRU or LSTM layers run one frame at a time on the CPU (the ``cpu``
    backend's stack streamer; see :mod:`deltarnn.ops` for the protocol).

    One :meth:`step` equals :func:`deltarnn.ops.cpu.gru` / ``lstm`` with T = 1 layer after layer
    (the same compiled layer code), hence :func:`deltarnn.functional.delta_gru` / ``delta_lstm``
    to float32 rounding; NaN deltas are sent and memories re-synced by the spec's rule.

    Args:
        kind: ``"GRU"`` or ``"LSTM"``.
        layers: one :class:`~deltarnn.ops.LayerParams` per layer, float32 or float64 CPU tensors
            (read once, here: packed into the streamer's own buffers).
        state: one :class:`~deltarnn.functional.DeltaGRUState` / ``DeltaLSTMState`` per layer,
            batch B.
        count: keep the last step's send counts (:meth:`counts`).
        weights: ``"float32"`` (the parameters' own dtype) or ``"int8"``
            (:func:`deltarnn.ops.cpu.pack_int8`: 8-bit weights, a scale per column).
        resync_every: period of the dense memory re-sync (0: only the bound rule).
        packed: one :func:`deltarnn.ops.cpu.pack` of each layer's weights (those of
            ``layers``), to read instead of packing them again: a module's streamer shares the
            module's packed copy (float weights only). The streamer holds them; nothing writes
            them.
    """

    def __init__(
        self,
        kind: str,
        layers: Sequence[LayerParams],
        state: tuple,
        *,
        count: bool = False,
        weights: str = "float32",
        resync_every: int = RESYNC_EVERY,
        packed: Sequence[CPUPacked] | None = None,
    ) -> None:
        if kind not in _STATE_TYPES:
            raise ConfigError(f"kind must be 'GRU' or 'LSTM', got {kind!r}")
        if weights not in _PACKERS:
            raise ConfigError(f"weights must be 'float32' or 'int8', got {weights!r}")
        if not layers:
            raise ConfigError("layers must hold at least one layer")
        if _kernels is None:
            raise BackendError("the cpu backend needs numba (pip install 'deltarnn[cpu]')")
        self._resync_every = _check_resync_every(resync_every)
        self._state_type = _STATE_TYPES[kind]
        self._kernel = _kernels.lstm_stack_step if kind == "LSTM" else _kernels.gru_stack_step
        if packed is None:
            packed = [
                _PACKERS[weights](p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh) for p in layers
            ]
        elif weights != "float32" or len(packed) != len(layers):
            raise ConfigError("packed takes one float32 pack per layer (weights='float32')")
        elif any(
            p.wx.shape[::-1] != tuple(q.weight_ih.shape)
            for p, q in zip(packed, layers, strict=True)
        ):
            raise ShapeError("packed must hold the packs of the layers' own weights")
        for k, p in enumerate(packed):
            _check_ready(p, kind)
            if p.dtype != packed[0].dtype or p.wx.dtype != packed[0].wx.dtype:
                raise DTypeError(f"layer {k}'s weights are {p.dtype}, layer 0's {packed[0].dtype}")
            if not (p.wx.flags.c_contiguous and p.wh.flags.c_contiguous):
                raise BackendError(f"layer {k}'s packed weights are not C-contiguous")
            if k and p.input_size != packed[k - 1].hidden_size:
                raise ShapeError(
                    f"layer {k} takes {p.input_size} inputs, but layer {k - 1} has "
                    f"{packed[k - 1].hidden_size} hidden units"
                )
        if not isinstance(state, (tuple, list)) or len(state) != len(packed):
            raise ShapeError(f"state must be a tuple of {len(packed)} {self._state_type.__name__}")
        if not isinstance(state[0], self._state_type) or not isinstance(state[0].h, Tensor):
            raise ShapeError(
                f"state[0] must be a {self._state_type.__name__}, got {type(state[0]).__name__}"
            )
        batch = state[0].h.shape[0]
        np_dtype = packed[0].np_dtype
        self._layout = np.zeros((len(packed), _kernels.LAYOUT_FIELDS), np.int64)
        arenas = (_Arena(), _Arena())
        self._layers = [_Layer(p, batch, self._layout[k]) for k, p in enumerate(packed)]
        # Every layer's state first, in one block (``advance`` copies it in and out whole).
        for layer in self._layers:
            layer.take_state(arenas[0])
        self._state_size = arenas[0].size
        for k, layer in enumerate(self._layers):
            layer.take_work(k == len(packed) - 1, arenas)
        self._fbuf = arenas[0].build(np_dtype)
        self._ibuf = arenas[1].build(np.int64)
        self._wbuf = np.zeros(1, packed[0].wx.dtype)  # the weights' dtype, for the kernel
        for layer, params in zip(self._layers, layers, strict=True):
            layer.bind(self._fbuf, self._ibuf)
            p = layer.packed
            for name, theta, buffer in (
                ("theta_x", params.theta_x, layer.theta_x),
                ("theta_h", params.theta_h, layer.theta_h),
            ):
                check_threshold(theta, name, buffer.shape[0])
                buffer[...] = _threshold(theta, name, buffer.shape[0], p.np_dtype)
        self._np_dtype = np_dtype
        self._dtype = packed[0].dtype
        self._frame_shape = (batch, packed[0].input_size)
        self._out_shape = (batch, packed[-1].hidden_size)
        self._out_spare = torch.zeros(self._out_shape, dtype=self._dtype)
        self._count = bool(count)
        self._fast = np_dtype == np.float32
        self._lean, self._bound = float(LEAN_OCCUPANCY), float(MEMORY_BOUND)
        self._counted = False
        # advance(): the state block's fields, as (start, end, (B, n)) and their sizes
        self._parts = []
        for layer in self._layers:
            for field, n in layer.state_sizes:
                start = int(layer.row[field])
                self._parts.append((start, start + n, (batch, n // batch)))
        self._split_sizes = [b - a for a, b, _ in self._parts]
        bounds = np.cumsum([0] + [len(layer.state) for layer in self._layers]).tolist()
        # each layer's run of fields
        self._layer_fields = list(zip(bounds[:-1], bounds[1:], strict=True))
        self._field_shapes = [torch.Size(shape) for _, _, shape in self._parts]
        self._state_region = self._fbuf[: self._state_size]
        # (state, its block, its float fields, their data pointers): what advance returned last
        self._last: tuple = (None, None, None, None)
        self.load_state(state)
        # advance(state=None): the state the streamer was built with, as its block and counters
        self._initial_block = self._state_region.copy()
        self._initial_since = [_own_since(s.since_sync) for s in state]

    @property
    def batch_size(self) -> int:
        return self._frame_shape[0]

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights a dense step of the whole stack reads (see ``CPUPacked``)."""
        return sum(layer.packed.weight_bytes for layer in self._layers)

    def load_state(self, state: tuple) -> None:
        """Continue from ``state`` (one layer state per layer, same batch); copied in."""
        self._write_state(state)
        for layer, s in zip(self._layers, state, strict=True):
            layer.since_given = s.since_sync.detach().clone()  # returned as given without re-sync
            for seen in layer.seen:
                seen[...] = 0  # restart the step stamps of the batch-union counts
        self._steps = 0
        self._counted = False

    def _write_state(self, state: tuple) -> None:
        """Copy ``state`` (checked) into the buffers."""
        if not isinstance(state, (tuple, list)) or len(state) != len(self._layers):
            raise ShapeError(
                f"state must be a tuple of {len(self._layers)} {self._state_type.__name__}"
            )
        batch = self.batch_size
        arrays = [
            _state_arrays(s, self._state_type, layer.packed, batch)
            for s, layer in zip(state, self._layers, strict=True)
        ]
        since = [_since_array(s.since_sync, batch) for s in state]
        for layer, fields, counter in zip(self._layers, arrays, since, strict=True):
            for buffer, array in zip(layer.state, fields, strict=True):
                buffer[...] = array
            layer.since[...] = counter

    def step(self, frame: Tensor, out: Tensor | None = None) -> Tensor:
        """Advance every layer by one frame (B, I); the last layer's h (B, H), fresh or ``out``."""
        # The kernel takes the frame and the output by address: checking a tensor's attributes
        # costs less than making NumPy views of two tensors (about 0.6 us each) at every frame.
        if not _by_address(frame, self._dtype, self._frame_shape):
            frame = self._frame(frame)
        if out is None:
            result = target = torch.empty_like(self._out_spare)  # faster than torch.empty
        elif _by_address(out, self._dtype, self._out_shape) and not out.requires_grad:
            result = target = out
        else:
            result, target = out, self._out_target(out)
        self._run(frame, target, self._count)
        if target is not result:
            out.copy_(target)
        return result

    def _run(self, frame: Tensor, out: Tensor, count: bool) -> None:
        """The compiled step: frame and out contiguous, of the right dtype and size (checked)."""
        self._steps += 1
        self._kernel(
            frame.data_ptr(), out.data_ptr(), self._frame_shape[0], self._fbuf, self._ibuf,
            self._wbuf, self._layout, self._steps, count, self._fast, self._resync_every,
            self._lean, self._bound,
        )  # fmt: skip
        self._counted = count

    def advance(
        self, frame: Tensor, state: tuple | None, out: Tensor, count: bool = False, check=None
    ):
        """The functional form of :meth:`step`, what ``module.stream`` at T = 1 and the cells
        run (:mod:`deltarnn.nn.call_plan`): ``state`` in, one frame, a new state out; ``state``
        itself is never modified, and the streamer's own state is overwritten.

        The state's float fields are copied in, advanced, and copied out into one new block,
        whose views are the new state's tensors. A state that this method returned last,
        untouched since (the same tensors at the same memory, of the same shapes; their values
        may have been written), is copied in as that one block without its checks. Without a
        re-sync period, ``since_sync`` is returned as given (a copy; the shared default as is).

        Args:
            frame: a C-contiguous CPU tensor of the streamer's dtype holding B*I values in
                (B, I) order, any shape; out: the same for the B*H values of the last layer's
                h. The caller checks both (``call_plan.planned_call`` does).
            state: one layer state per layer, batch B; ``None``: the state the streamer was
                built with (a fresh stream), copied in as one block.
            count: also return the step's send counts.
            check: called with ``state`` before a state that is not the kept block is copied
                in (the caller's own checks, with its messages).

        Returns:
            ``(new state, a DeltaCounts per layer or None)``.
        """
        # The kept-state check inline: a method call and its tuple unpacking cost about as much
        # as the check itself, at every frame.
        last, block, fields, pointers = self._last
        fresh = state is None
        kept = (
            not fresh
            and last is not None
            and type(state) is tuple
            and len(state) == len(last)
            and all(map(is_, state, last))
            # The same layer states hold the same tensors (tuples are immutable): were they
            # re-pointed (set_, .data =) or reshaped in place since? (Lists: see nn.watch.)
            and list(map(_DATA_PTR, fields)) == pointers
            and list(map(Tensor.size, fields)) == self._field_shapes
        )
        region = self._state_region
        if fresh:
            region[...] = self._initial_block
            given_since = self._initial_since
        elif kept:
            region[...] = block
            given_since = list(map(_SINCE_SYNC, state))
        else:
            if check is not None:
                check(state)
            self._write_state(state)  # the re-sync counters too
            given_since = list(map(_SINCE_SYNC, state))
        if (fresh or kept) and self._resync_every > 0:
            for layer, since in zip(self._layers, given_since, strict=True):
                layer.since[...] = _since_array(since, self.batch_size)
        self._run(frame, out, count)
        block = region.copy()
        if self._frame_shape[0] == 1:  # (1, n) views by one split: cheaper than one view a field
            fields = torch.from_numpy(block.reshape(1, -1)).split_with_sizes(self._split_sizes, 1)
        else:
            fields = [torch.from_numpy(block[a:b].reshape(shape)) for a, b, shape in self._parts]
        if self._resync_every > 0:
            since = [torch.from_numpy(layer.since.copy()) for layer in self._layers]
        else:
            # as given: one this method returned is not written by anything; one from
            # elsewhere (or the initial one) is copied, so that the new state shares no tensor
            # with the caller's (or the streamer's)
            since = given_since if kept else list(map(_own_since, given_since))
        new = self._state_type
        if len(since) == 1:  # one layer (a cell): no loop
            states = (new(*fields, since[0]),)
        else:
            states = []
            for (a, b), c in zip(self._layer_fields, since, strict=True):
                states.append(new(*fields[a:b], c))
            states = tuple(states)
        self._last = (states, block, fields, list(map(_DATA_PTR, fields)))
        return states, (self._read_counts() if count else None)

    def _frame(self, frame) -> Tensor:
        """A frame the fast check in :meth:`step` did not pass: an error, or a contiguous copy."""
        shape = self._frame_shape
        if not isinstance(frame, Tensor):
            raise ShapeError(
                f"frame must be a tensor of shape {shape} (B, I), got {type(frame).__name__}"
            )
        if frame.device.type != "cpu" or frame.layout is not torch.strided:
            raise DeviceError(f"frame must be a dense tensor on the CPU, got {frame.device}")
        if tuple(frame.shape) != shape:
            raise ShapeError(f"frame must have shape {shape} (B, I), got {tuple(frame.shape)}")
        if frame.dtype != self._dtype:
            raise DTypeError(f"frame must be {self._dtype}, got {frame.dtype}")
        return frame.detach().contiguous()

    def _out_target(self, out: Tensor) -> Tensor:
        """``out`` when the kernel can write it directly, else the spare output tensor."""
        if not isinstance(out, Tensor) or tuple(out.shape) != self._out_shape:
            raise ShapeError(
                f"out must be a tensor of shape {self._out_shape} (B, H), got "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
            )
        if out.dtype != self._dtype or out.device.type != "cpu" or out.layout is not torch.strided:
            raise DTypeError(
                f"out must be a dense {self._dtype} tensor on the CPU, got {out.dtype} on "
                f"{out.device}"
            )
        if out.is_contiguous() and not out.requires_grad:
            return out
        return self._out_spare

    @property
    def steps(self) -> int:
        """Frames stepped since construction or the last :meth:`load_state`."""
        return self._steps

    def state(self) -> tuple:
        """The per-layer states after the last step (copies), ``since_sync`` included."""
        states = []
        for layer in self._layers:
            fields = [torch.from_numpy(a.copy()) for a in layer.state]
            if self._resync_every > 0:
                since = torch.from_numpy(layer.since.copy())
            else:
                since = layer.since_given.clone()
            states.append(self._state_type(*fields, since))
        return tuple(states)

    def counts(self) -> list[DeltaCounts]:
        """The last step's send counts, one :class:`~deltarnn.functional.DeltaCounts` per layer
        (T = 1)."""
        if not self._count:
            raise BackendError("counts() needs a streamer built with count=True")
        if not self._counted:
            raise BackendError("counts() has nothing to report before the first step")
        return self._read_counts()

    def _read_counts(self) -> list[DeltaCounts]:
        return [
            DeltaCounts(*(torch.from_numpy(a.copy()) for a in layer.counts))
            for layer in self._layers
        ]
