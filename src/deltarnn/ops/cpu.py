"""The CPU backend: delta GRU/LSTM layers in compiled code (numba), inference only.

A dense step at batch 1 reads all G*H*(I+H) weights. This engine packs the weights
column-contiguous, so that input j's G*H weights are one contiguous row, and per step and sample
it

1. delta-encodes x_t against x̂ and h_{t-1} against ĥ (sent iff ``|v - v̂| > Θ`` or NaN),
2. adds ``Δ_j * column_j`` to the memory for each sent column j only: a column that was not sent
   is neither read nor multiplied, so weight bytes fetched fall with occupancy; or, where the
   spec's re-sync rule fires (a memory past ``MEMORY_BOUND`` or non-finite, or every
   ``resync_every`` steps), recomputes the memory densely from the biases, x̂ and ĥ,
3. applies the gate nonlinearities.

The input deltas do not depend on the recurrence, so a chunk of steps is encoded first and, when
enough inputs move, the chunk's input products are formed together, block of columns by block,
reading each input weight at most once per chunk (as ``torch.nn.GRU`` does with its input GEMM).

The whole sequence runs inside one compiled call (no Python per step). Results equal
:func:`deltarnn.functional.delta_gru` / ``delta_lstm`` to float32 rounding (the float32 gates use
rational approximations of tanh and sigmoid accurate to 3e-7; float64 uses libm), and the counts
are the columns processed, which equal the spec's counts.

:class:`CPUStreamer` runs one frame at a time from preallocated buffers, for live input.
:func:`pack_int8` stores 8-bit weights with a scale per column (a quarter of the bytes).

numba is an optional dependency: without it this module still imports and
:func:`is_available` is ``False``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import BackendError, ConfigError, DeviceError, DTypeError, ShapeError
from ..functional import (
    GATES,
    MEMORY_BOUND,
    DeltaCounts,
    DeltaGRUState,
    DeltaLSTMState,
    gru_initial_memory,
    lstm_initial_memory,
)
from ..functional.checks import check_threshold
from ..functional.state import _NO_STEPS

log = logging.getLogger(__name__)

try:  # soft import: the backend is simply unavailable without numba
    from . import _cpu_kernels as _kernels
except ImportError as exc:  # pragma: no cover - exercised only where numba is missing
    _kernels = None
    log.debug("cpu backend unavailable: %s", exc)

NAME = "cpu"
_STATE_TYPES = {"GRU": DeltaGRUState, "LSTM": DeltaLSTMState}
_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_TORCH = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
# Input products are formed for a chunk of steps at a time (the chunk's products take about
# CHUNK_BYTES), in blocks of weight columns of about BLOCK_BYTES (see
# _cpu_kernels._input_products) that stay in cache while every step of the chunk uses them.
# Measured on a 1 MiB-L2 x86 core (benchmarks/README.md).
BLOCK_BYTES = 128 * 1024
CHUNK_BYTES = 1024 * 1024
# Below this input occupancy a chunk's input columns are added at each step instead (few steps
# share a column, so batching saves little and costs passes over the chunk's products).
LEAN_OCCUPANCY = 0.035


def is_available() -> bool:
    """Whether numba imports here."""
    return _kernels is not None


def supports(device: torch.device, dtype: torch.dtype, needs_grad: bool) -> bool:
    """CPU tensors of float32 or float64, without autograd."""
    return torch.device(device).type == "cpu" and dtype in _DTYPES and not needs_grad


@dataclass(frozen=True, eq=False)
class CPUPacked:
    """Weights of one layer, column-contiguous.

    Attributes:
        wx: ``weight_ih`` transposed, (I, G*H), C-contiguous: row j holds input j's weights.
            float32/float64, or int8 from :func:`pack_int8`.
        wh: ``weight_hh`` transposed, (H, G*H), C-contiguous.
        gates: G, 3 for a GRU (r|z|n) and 4 for an LSTM (i|f|g|o).
        sx, sh: per-column scales, (I,) and (H,), in the compute dtype: column j's weights are
            ``sx[j] * wx[j]``. Ones for float weights; the kernels fold them into the deltas.
        m0: (4H,) the memory before any delta (from the biases; zeros without them), which the
            re-sync starts from.
    """

    wx: np.ndarray
    wh: np.ndarray
    gates: int
    sx: np.ndarray
    sh: np.ndarray
    m0: np.ndarray

    @property
    def input_size(self) -> int:
        return self.wx.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.wh.shape[0]

    @property
    def np_dtype(self) -> np.dtype:
        """The compute dtype (inputs, state, outputs)."""
        return self.sx.dtype

    @property
    def dtype(self) -> torch.dtype:
        return _TORCH[self.sx.dtype]

    @property
    def quantized(self) -> bool:
        return self.wx.dtype == np.int8

    @property
    def kernel_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.wx, self.sx, self.wh, self.sh

    @property
    def weight_bytes(self) -> int:
        """Bytes a dense step reads: all of ``wx`` and ``wh`` (and their scales)."""
        scales = self.sx.nbytes + self.sh.nbytes if self.quantized else 0
        return self.wx.nbytes + self.wh.nbytes + scales


def _check_weights(weight_ih: Tensor, weight_hh: Tensor) -> int:
    """Shapes, dtypes and device of a layer's weights; returns the number of gates."""
    for name, w in (("weight_ih", weight_ih), ("weight_hh", weight_hh)):
        if w.dim() != 2:
            raise ShapeError(f"{name} must be 2-D (G*H, features), got shape {tuple(w.shape)}")
        if w.device.type != "cpu":
            raise DeviceError(f"{name} must be on the CPU for the cpu backend, got {w.device}")
        if w.dtype not in _DTYPES:
            raise DTypeError(f"{name} must be float32 or float64, got {w.dtype}")
    if weight_ih.dtype != weight_hh.dtype:
        raise DTypeError(
            f"weight_ih and weight_hh must have one dtype, got {weight_ih.dtype} and "
            f"{weight_hh.dtype}"
        )
    rows, hidden = weight_hh.shape
    if hidden == 0 or rows % hidden or rows // hidden not in GATES.values():
        raise ShapeError(
            f"weight_hh must be (3H, H) or (4H, H), got shape {tuple(weight_hh.shape)}"
        )
    if weight_ih.shape[0] != rows:
        raise ShapeError(
            f"weight_ih must have {rows} rows like weight_hh, got shape {tuple(weight_ih.shape)}"
        )
    return rows // hidden


def _initial_memory(
    gates: int, weight_ih: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None
) -> np.ndarray:
    """The re-sync's starting memory (4H,) as an array of the weights' dtype."""
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is not None and (b.shape != (weight_ih.shape[0],) or b.dtype != weight_ih.dtype):
            raise ShapeError(
                f"{name} must be a ({weight_ih.shape[0]},) tensor of {weight_ih.dtype}, got "
                f"shape {tuple(b.shape)} of {b.dtype}"
            )
    initial = lstm_initial_memory if gates == GATES["LSTM"] else gru_initial_memory
    with torch.no_grad():
        m0 = initial(bias_ih, bias_hh, weight_ih.detach())
    return m0.detach().cpu().numpy().copy()


def pack(
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> CPUPacked:
    """Transpose the weights to the column-contiguous layout the kernels read.

    Args:
        weight_ih: (G*H, I). weight_hh: (G*H, H). Same dtype (float32 or float64), on the CPU.
        bias_ih, bias_hh: (G*H,) or ``None``: the biases the memories started from, which the
            re-sync recomputes them from.
    """
    gates = _check_weights(weight_ih, weight_hh)
    # Always a copy: the packed weights must not change when the parameters are updated in place.
    wx = weight_ih.detach().t().numpy().copy(order="C")
    wh = weight_hh.detach().t().numpy().copy(order="C")
    m0 = _initial_memory(gates, weight_ih, bias_ih, bias_hh)
    ones = np.ones(wx.shape[0], wx.dtype), np.ones(wh.shape[0], wh.dtype)
    return CPUPacked(wx, wh, gates, *ones, m0)


def pack_int8(
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> CPUPacked:
    """Like :func:`pack` with 8-bit weights: one scale per column, a quarter of the bytes.

    Column j (the G*H weights input j feeds) is stored as ``round(w / s_j)`` in [-127, 127] with
    ``s_j = max|w| / 127``, so each weight is within ``s_j / 2`` of its float value. The
    kernels multiply the delta by ``s_j`` once and read int8 weights, so the step reads a quarter
    of the weight bytes; inputs, state and accumulation stay in the weights' float dtype. Results
    equal the spec run with the dequantized weights (:func:`dequantize`), not the float weights.
    """
    gates = _check_weights(weight_ih, weight_hh)
    quantized = []
    for w in (weight_ih, weight_hh):
        cols = w.detach().t().to(torch.float64)  # (features, G*H): one row per column of w
        scale = cols.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(cols / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        quantized += [q.numpy().copy(order="C"), scale.to(w.dtype).numpy().copy()]
    wx, sx, wh, sh = quantized
    return CPUPacked(wx, wh, gates, sx, sh, _initial_memory(gates, weight_ih, bias_ih, bias_hh))


def dequantize(packed: CPUPacked) -> tuple[Tensor, Tensor]:
    """The float weights ``(weight_ih, weight_hh)`` a packed layer computes with, torch layout."""
    out = []
    for w, s in ((packed.wx, packed.sx), (packed.wh, packed.sh)):
        out.append(torch.from_numpy((w.astype(s.dtype) * s[:, None]).T.copy()))
    return out[0], out[1]


def gru(
    x: Tensor,
    state: DeltaGRUState,
    packed: CPUPacked,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    *,
    count: bool = False,
    resync_every: int = 0,
) -> tuple[Tensor, DeltaGRUState, DeltaCounts | None]:
    """One delta GRU layer over x (T, B, I); the contract of :func:`deltarnn.functional.delta_gru`.

    Returns:
        ``(output (T, B, H), state after the last step, DeltaCounts or None)``. The input state is
        not modified.
    """
    return _layer("GRU", x, state, packed, theta_x, theta_h, count, resync_every)


def lstm(
    x: Tensor,
    state: DeltaLSTMState,
    packed: CPUPacked,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    *,
    count: bool = False,
    resync_every: int = 0,
) -> tuple[Tensor, DeltaLSTMState, DeltaCounts | None]:
    """One delta LSTM layer over x (T, B, I); the contract of :func:`deltarnn.functional.delta_lstm`."""
    return _layer("LSTM", x, state, packed, theta_x, theta_h, count, resync_every)


def _layer(
    kind: str, x: Tensor, state, packed: CPUPacked, theta_x, theta_h, count: bool, resync_every
):
    """:func:`gru` or :func:`lstm`: one :class:`LayerCall`, used once."""
    batch = x.shape[1] if isinstance(x, Tensor) and x.dim() == 3 else 0
    call = LayerCall(kind, packed, theta_x, theta_h, batch, resync_every)
    out, new_state, counts = call.run(call.input_array(x), state, count)
    return torch.from_numpy(out), new_state, counts


class LayerCall:
    """Calls of one layer at one batch size: what does not change from call to call (packed
    weights, thresholds converted, work buffers) is prepared once.

    :meth:`run` is the contract of :func:`gru` / :func:`lstm`: the state passed in is copied,
    the copy advanced by one compiled call and returned as a new state; the input state is
    never modified. Repeated calls (a stream fed one frame at a time) reuse the work buffers,
    and a state this object returned last is copied in one block, without its checks.

    The thresholds are copied at construction: build a new one when they or the weights change.
    Safe to call from several threads (a call that finds the work buffers busy uses its own).

    Args:
        kind: ``"GRU"`` or ``"LSTM"``; packed: from :func:`pack` or :func:`pack_int8`.
        theta_x, theta_h: floats or tensors broadcastable to (I,) and (H,).
        batch: B. resync_every: as in :func:`gru`.
    """

    def __init__(self, kind: str, packed: CPUPacked, theta_x, theta_h, batch: int,
                 resync_every: int = 0):  # fmt: skip
        _check_ready(packed, kind)
        self.kind, self.packed, self.batch = kind, packed, batch
        self.state_type = _STATE_TYPES[kind]
        self.resync_every = _check_resync_every(resync_every)
        inputs, hidden, dtype = packed.input_size, packed.hidden_size, packed.np_dtype
        self.theta_x = np.array(_threshold(theta_x, "theta_x", inputs, dtype), copy=True)
        self.theta_h = np.array(_threshold(theta_h, "theta_h", hidden, dtype), copy=True)
        self._kernel = _kernel(kind)
        self._fast = dtype == np.float32
        # The state's float fields in one block: (its elements, shape) in field order.
        sizes = {"h": hidden, "c": hidden, "x_hat": inputs, "h_hat": hidden, "m": 4 * hidden}
        self._slices, offset = [], 0
        for name in self.state_type._fields[:-1]:  # since_sync is int64, kept apart
            end = offset + batch * sizes[name]
            self._slices.append((slice(offset, end), (batch, sizes[name])))
            offset = end
        self._block = offset
        self._shapes = tuple(torch.Size(shape) for _, shape in self._slices)
        self._unused_since = np.zeros(batch, np.int64)  # the kernels' since without re-sync period
        self._no_counts = _counts(0, batch, dtype)
        self._lock = threading.Lock()
        self._work: tuple[int, tuple] | None = None  # (steps, buffers) kept for the next call
        self._stamp = 1  # numbers the steps for the batch-union counts; grows across calls
        # (state, its block, its tensors' data pointers): the state returned last.
        self._last: tuple = (None, None, None)

    def takes(self, theta_x, theta_h) -> bool:
        """Whether ``theta_x`` and ``theta_h`` equal the thresholds this object holds (tensors
        of the weights' dtype and its shapes, on the CPU, compared by value)."""
        return _same_values(self.theta_x, theta_x) and _same_values(self.theta_h, theta_h)

    def input_array(self, x: Tensor) -> np.ndarray:
        """x (T, B, I) checked, as an array the kernels take."""
        packed = self.packed
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ShapeError(
                f"input must be a 3-D tensor (T, B, I), got {getattr(x, 'shape', type(x))}"
            )
        if x.shape[2] != packed.input_size:
            raise ShapeError(
                f"input must have {packed.input_size} features (last dim), got shape "
                f"{tuple(x.shape)}"
            )
        if x.dtype != packed.dtype:
            raise DTypeError(f"input dtype {x.dtype} differs from the weights' {packed.dtype}")
        if x.device.type != "cpu":
            raise DeviceError(f"input must be on the CPU for the cpu backend, got {x.device}")
        if x.shape[1] != self.batch:
            raise ShapeError(f"input must have batch {self.batch}, got shape {tuple(x.shape)}")
        return x.detach().contiguous().numpy()

    def run(
        self,
        x: np.ndarray,
        state,
        count: bool = False,
        out: np.ndarray | None = None,
        kept: np.ndarray | None = None,
    ) -> tuple[np.ndarray, DeltaGRUState | DeltaLSTMState, DeltaCounts | None]:
        """Advance a copy of ``state`` over x (T, B, I), a C-contiguous array of the weights'
        dtype (see :meth:`input_array`).

        Args:
            out: (T, B, H) array to write the outputs into; a new one when ``None``.
            kept: :meth:`kept_block` of ``state``, when the caller asked already.

        Returns:
            ``(output (T, B, H) array, new state, DeltaCounts or None)``.
        """
        steps = x.shape[0]
        kept = self.kept_block(state) if kept is None else kept
        block = self._checked_copy(state) if kept is None else kept.copy()
        arrays = [block[part].reshape(shape) for part, shape in self._slices]
        since, since_sync = self._since(state.since_sync)
        if out is None:
            out = np.empty((steps, self.batch, self.packed.hidden_size), self.packed.np_dtype)
        counts = _counts(steps, self.batch, self.packed.np_dtype) if count else self._no_counts
        packed = self.packed
        state_args = _kernel_state(self.kind, arrays)
        if self._lock.acquire(blocking=False):
            try:
                work, stamp = self._work_for(steps)
                self._kernel(
                    x, packed.kernel_weights, self.theta_x, self.theta_h, *state_args, packed.m0,
                    since, out, work, counts, stamp, count, self._fast, self.resync_every,
                )  # fmt: skip
            finally:
                self._lock.release()
        else:  # another thread is in a call: this one brings its own buffers
            self._kernel(
                x, packed.kernel_weights, self.theta_x, self.theta_h, *state_args, packed.m0,
                since, out, _work(_chunk_steps(steps, self.batch, packed), self.batch, packed),
                counts, 1, count, self._fast, self.resync_every,
            )  # fmt: skip
        tensors = list(map(torch.from_numpy, arrays))
        new_state = self.state_type(*tensors, since_sync)
        self._last = (new_state, block, tuple(map(Tensor.data_ptr, tensors)))
        result_counts = DeltaCounts(*map(torch.from_numpy, counts)) if count else None
        return out, new_state, result_counts

    def kept_block(self, state) -> np.ndarray | None:
        """The block holding ``state``'s values, if it is the state this object returned last,
        untouched since (the same tensors, at the same memory, of the same shapes; their values
        may have been written); else ``None``."""
        last = self._last  # one read: another thread may replace it meanwhile
        if state is not last[0]:
            return None
        fields = state[:-1]
        if (
            tuple(map(Tensor.data_ptr, fields)) == last[2]
            and tuple(t.shape for t in fields) == self._shapes
        ):
            return last[1]
        return None

    def _checked_copy(self, state) -> np.ndarray:
        """A new block holding the float fields of ``state``, checked."""
        block = np.empty(self._block, self.packed.np_dtype)
        arrays = _state_arrays(state, self.state_type, self.packed, self.batch)
        for (part, _), array in zip(self._slices, arrays, strict=True):
            block[part] = array.reshape(-1)
        return block

    def _since(self, since_sync) -> tuple[np.ndarray, Tensor]:
        """The kernels' since array and the ``since_sync`` of the new state."""
        if self.resync_every > 0:
            since = _since_array(since_sync, self.batch)
            return since, torch.from_numpy(since)
        if since_sync is _NO_STEPS:  # the shared default, returned as given (it is never written)
            return self._unused_since, since_sync
        _since_array(since_sync, self.batch)  # checked
        # returned as given, copied: no output may alias an input (the operators' contract)
        return self._unused_since, since_sync.clone()

    def _work_for(self, steps: int) -> tuple[tuple, int]:
        """The kept work buffers (for ``steps`` steps) and this call's first step stamp."""
        if self._work is None or self._work[0] != steps:
            chunk = _chunk_steps(steps, self.batch, self.packed)
            self._work = (steps, _work(chunk, self.batch, self.packed))
        stamp = self._stamp
        self._stamp += max(steps, 1)
        return self._work[1], stamp


class CPUStreamer:
    """One layer run one frame at a time, from preallocated buffers (no allocation per step).

    Built from packed weights and a state (a fresh one from
    :func:`deltarnn.functional.gru_initial_state` / ``lstm_initial_state``, or the state a
    previous call returned). Stepping it T times gives the same outputs and state as one
    :func:`gru`/:func:`lstm` call over the T frames (it runs the same compiled code).

    Args:
        packed: from :func:`pack` or :func:`pack_int8`; 3 gates means a GRU, 4 an LSTM.
        state: :class:`DeltaGRUState` or :class:`DeltaLSTMState` matching ``packed``, batch B.
        theta_x, theta_h: thresholds, floats or tensors broadcastable to (I,) and (H,).
        count: keep the send counts of the last step in :attr:`last_counts`.
        resync_every: period of the dense memory re-sync (0: only the bound rule; see
            :func:`deltarnn.functional.delta_gru`).

    Example::

        streamer = CPUStreamer(pack(gru.weight_ih_l0, gru.weight_hh_l0), state, 0.05, 0.05)
        for frame in frames:          # frame: (B, I)
            h = streamer.step(frame)  # (B, H), overwritten by the next step
    """

    def __init__(
        self,
        packed: CPUPacked,
        state: DeltaGRUState | DeltaLSTMState,
        theta_x: Tensor | float,
        theta_h: Tensor | float,
        *,
        count: bool = False,
        resync_every: int = 0,
    ):
        self.kind = "GRU" if packed.gates == GATES["GRU"] else "LSTM"
        _check_ready(packed, self.kind)
        self.packed = packed
        self._state_type = _STATE_TYPES[self.kind]
        batch = state.h.shape[0] if hasattr(state, "h") else 0
        self._buffers = _state_arrays(state, self._state_type, packed, batch)
        self._resync_every = _check_resync_every(resync_every)
        self._since = _since_array(state.since_sync, batch)
        self._since_given = state.since_sync.clone()
        dtype = packed.np_dtype
        inputs, hidden = packed.input_size, packed.hidden_size
        self.batch = batch
        check_threshold(theta_x, "theta_x", inputs)
        check_threshold(theta_h, "theta_h", hidden)
        self._theta_x = _threshold(theta_x, "theta_x", inputs, dtype)
        self._theta_h = _threshold(theta_h, "theta_h", hidden, dtype)
        self._x = np.zeros((1, batch, inputs), dtype)
        self._x_frame = self._x[0]
        self._out = np.zeros((1, batch, hidden), dtype)
        self._out_tensor = torch.from_numpy(self._out[0])
        self._work = _work(1, batch, packed)
        self._counts = _counts(1, batch, dtype)
        self._count = count
        self._fast = dtype == np.float32
        self._steps = 0
        self._kernel = _kernel(self.kind)
        # Everything but the input frame and the step stamp is fixed: one argument list, built
        # once, with those two slots overwritten per step.
        self._args = [
            self._x, packed.kernel_weights, self._theta_x, self._theta_h,
            *_kernel_state(self.kind, self._buffers), packed.m0, self._since, self._out,
            self._work, self._counts, 0, count, self._fast, self._resync_every,
        ]  # fmt: skip
        self._stamp_slot = len(self._args) - 4

    def step(self, x: Tensor | np.ndarray) -> Tensor:
        """Advance one frame.

        Args:
            x: (B, I) tensor or array of the weights' dtype.

        Returns:
            h_t, (B, H): a view of an internal buffer that the next step overwrites (clone it to
            keep it).
        """
        if isinstance(x, Tensor):
            try:
                frame = x.numpy()
            except RuntimeError:  # requires grad, or not on the CPU
                frame = x.detach().cpu().numpy()
        elif isinstance(x, np.ndarray):
            frame = x
        else:
            raise ShapeError(
                f"x must be a tensor or array of shape {self._x_frame.shape} (B, I), "
                f"got {type(x).__name__}"
            )
        if frame.shape != self._x_frame.shape:
            raise ShapeError(f"x must have shape {self._x_frame.shape} (B, I), got {frame.shape}")
        if frame.dtype != self._x.dtype:
            raise DTypeError(f"x dtype {frame.dtype} differs from the weights' {self._x.dtype}")
        args = self._args
        # A C-contiguous frame is passed as a (1, B, I) view, anything else is copied in.
        args[0] = frame.reshape(self._x.shape) if frame.flags.c_contiguous else self._copy_in(frame)
        self._steps += 1
        args[self._stamp_slot] = self._steps
        self._kernel(*args)
        args[0] = self._x  # hold no reference to the caller's frame
        return self._out_tensor

    def _copy_in(self, frame: np.ndarray) -> np.ndarray:
        self._x_frame[...] = frame
        return self._x

    @property
    def steps(self) -> int:
        """Frames stepped since construction or the last :meth:`load_state`."""
        return self._steps

    @property
    def state(self) -> DeltaGRUState | DeltaLSTMState:
        """The state after the last step (copies, safe to keep)."""
        arrays = (torch.from_numpy(a.copy()) for a in self._buffers)
        since = self._since.copy() if self._resync_every > 0 else None
        since_sync = self._since_given.clone() if since is None else torch.from_numpy(since)
        return self._state_type(*arrays, since_sync)

    def load_state(self, state: DeltaGRUState | DeltaLSTMState) -> None:
        """Continue from ``state`` (same type, batch and sizes); its tensors are copied in."""
        arrays = _state_arrays(state, self._state_type, self.packed, self.batch)
        for buffer, array in zip(self._buffers, arrays, strict=True):
            buffer[...] = array
        self._since[...] = _since_array(state.since_sync, self.batch)
        self._since_given = state.since_sync.clone()
        self._steps = 0
        for seen in self._work[7:9]:
            seen[...] = 0  # restart the step stamps of the batch-union counts

    @property
    def last_counts(self) -> DeltaCounts:
        """Send counts of the last step (T = 1), when built with ``count=True``."""
        if not self._count:
            raise BackendError("last_counts needs CPUStreamer(..., count=True)")
        return DeltaCounts(*(torch.from_numpy(a.copy()) for a in self._counts))


def _check_resync_every(resync_every) -> int:
    if isinstance(resync_every, bool) or not isinstance(resync_every, int) or resync_every < 0:
        raise ConfigError(f"resync_every must be an int >= 0, got {resync_every!r}")
    return resync_every


def _since_array(since_sync, batch: int) -> np.ndarray:
    """A private (B,) int64 copy of a state's ``since_sync`` ((B,) or 0-d)."""
    if (
        not isinstance(since_sync, Tensor)
        or since_sync.dtype != torch.int64
        or (since_sync.dim() != 0 and tuple(since_sync.shape) != (batch,))
    ):
        raise ShapeError(
            f"state.since_sync must be an int64 tensor of shape ({batch},) or (), got "
            f"{getattr(since_sync, 'dtype', type(since_sync))} of shape "
            f"{tuple(getattr(since_sync, 'shape', ()))}"
        )
    return since_sync.detach().cpu().expand(batch).numpy().copy()


def _kernel(kind: str):
    return _kernels.lstm_sequence if kind == "LSTM" else _kernels.gru_sequence


def _kernel_state(kind: str, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The kernels' state arguments ``(h, c, x_hat, h_hat, m)``; a GRU passes h as the unused c."""
    return tuple(arrays) if kind == "LSTM" else (arrays[0], *arrays)


def _check_ready(packed: CPUPacked, kind: str) -> None:
    if _kernels is None:
        raise BackendError("the cpu backend needs numba (pip install 'deltarnn[cpu]')")
    if not isinstance(packed, CPUPacked):
        raise BackendError(f"packed must come from deltarnn.ops.cpu.pack, got {type(packed)}")
    if packed.gates != GATES[kind]:
        raise ShapeError(
            f"packed weights have {packed.gates} gates; a {kind} needs {GATES[kind]} "
            f"(weight_ih must be ({GATES[kind]}*H, I))"
        )


def _same_values(held: np.ndarray, theta) -> bool:
    """Whether the tensor ``theta`` holds the values of ``held`` (same shape and dtype).

    Compared as bytes (a few times faster than ``np.array_equal`` on a threshold's size): equal
    bytes are equal values; the converse misses only -0.0 against 0.0, which rebuilds."""
    return (
        isinstance(theta, Tensor)
        and theta.dtype == _TORCH[held.dtype]
        and theta.device.type == "cpu"
        and theta.shape == held.shape
        and held.tobytes() == theta.detach().contiguous().numpy().tobytes()
    )


def _threshold(theta, name: str, size: int, dtype) -> np.ndarray:
    """A threshold (float or tensor broadcastable to (size,)) as a contiguous array of ``dtype``."""
    if (
        isinstance(theta, Tensor)
        and theta.shape == (size,)
        and theta.dtype == _TORCH[dtype]
        and theta.device.type == "cpu"
        and theta.is_contiguous()
    ):
        return theta.detach().numpy()  # the common case (modules pass expanded 1-D tensors)
    t = theta.detach() if isinstance(theta, Tensor) else torch.as_tensor(theta)
    try:
        t = t.to(device="cpu", dtype=torch.float64).expand(size)
    except RuntimeError as exc:
        raise ShapeError(
            f"{name} must be a float or broadcastable to ({size},), got shape {tuple(t.shape)}"
        ) from exc
    return np.ascontiguousarray(t.numpy(), dtype=dtype)


def _work(chunk: int, batch: int, packed: CPUPacked, block_bytes: int | None = None) -> tuple:
    """Work buffers of the kernels (see ``gru_sequence``) for chunks of ``chunk`` steps."""
    inputs, hidden, rows = packed.input_size, packed.hidden_size, packed.wx.shape[1]
    dtype = packed.np_dtype
    row_bytes = max(rows * dtype.itemsize, 1)
    block = max(4, (BLOCK_BYTES if block_bytes is None else block_bytes) // row_bytes)
    widest = max(inputs, hidden, 1)
    return (
        np.zeros((chunk, batch, max(inputs, 1)), np.int64),
        np.zeros((chunk, batch, max(inputs, 1)), dtype),
        np.zeros((chunk, batch), np.int64),
        np.zeros((chunk, batch), np.int64),
        np.zeros((chunk, batch, rows), dtype),
        np.zeros(max(hidden, 1), np.int64),
        np.zeros(max(hidden, 1), dtype),
        np.zeros(max(inputs, 1), np.int64),
        np.zeros(max(hidden, 1), np.int64),
        np.zeros(8 * ((widest + 7) // 8), np.uint8),
        block,
        float(LEAN_OCCUPANCY),
        float(MEMORY_BOUND),
        np.zeros(widest, np.int64),
        np.zeros(widest, dtype),
        np.zeros(inputs, dtype),
        np.zeros((batch, inputs), dtype),
    )


def _chunk_steps(steps: int, batch: int, packed: CPUPacked) -> int:
    """Steps per chunk: the chunk's input products, (C, B, G*H), take about CHUNK_BYTES."""
    row_bytes = max(batch * packed.wx.shape[1] * packed.np_dtype.itemsize, 1)
    return max(1, min(steps, CHUNK_BYTES // row_bytes))


def _counts(steps: int, batch: int, dtype) -> tuple[np.ndarray, ...]:
    """Buffers of (nx, nh, ux, uh, abs_x, abs_h), the fields of :class:`DeltaCounts`."""
    return (
        np.zeros((steps, batch), np.int64),
        np.zeros((steps, batch), np.int64),
        np.zeros(steps, np.int64),
        np.zeros(steps, np.int64),
        np.zeros((steps, batch), dtype),
        np.zeros((steps, batch), dtype),
    )


def _state_arrays(state, state_type, packed: CPUPacked, batch: int) -> list[np.ndarray]:
    """Writable C-contiguous copies of a state's tensors, each checked against its shape."""
    if not isinstance(state, state_type):
        raise ShapeError(f"state must be a {state_type.__name__}, got {type(state).__name__}")
    inputs, hidden = packed.input_size, packed.hidden_size
    sizes = {"h": hidden, "c": hidden, "x_hat": inputs, "h_hat": hidden, "m": 4 * hidden}
    arrays = []
    for field in state._fields[:-1]:  # since_sync is not an array of the kernels
        t = getattr(state, field)
        expected = (batch, sizes[field])
        if not isinstance(t, Tensor) or tuple(t.shape) != expected:
            raise ShapeError(
                f"state.{field} must have shape {expected}, got {tuple(getattr(t, 'shape', ()))}"
            )
        if t.dtype != packed.dtype:
            raise DTypeError(f"state.{field} dtype {t.dtype} differs from weights' {packed.dtype}")
        if t.device.type != "cpu":
            raise DeviceError(f"state.{field} must be on the CPU, got {t.device}")
        arrays.append(np.array(t.detach().numpy(), dtype=packed.np_dtype, order="C", copy=True))
    return arrays


def __getattr__(name: str):
    """The backend's stack streamer, ``StackStreamer``, from :mod:`.cpu_stream` on first use
    (that module imports this one, so either can be imported first)."""
    if name == "StackStreamer":
        from .cpu_stream import StackStreamer

        return StackStreamer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
