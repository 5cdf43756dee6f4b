"""The ``triton`` backend: delta GRU/LSTM inference kernels that read only the weight columns of
the deltas that were sent.

One step is two launches (see :mod:`deltarnn.ops._triton_kernels`):

1. ``prepare_step_kernel`` (one program): delta-encodes the input frame (streaming) and compacts
   the columns any batch row sent, input and hidden, into index lists;
2. ``delta_step_kernel`` (a grid over hidden-unit blocks and batch blocks): loops over the active
   columns only, reading those rows of the transposed weights ``W^T`` (one contiguous row per
   column), adds them to the memory, applies the gates, and delta-encodes the new h for the next
   step (flags of the units any row sent).

For a whole sequence the input side is taken out of the loop, as the spec does: the deltas of the
whole sequence come from one scan kernel, then one dense product over time (``x_mode="dense"``,
which reads ``W_ih`` once per sequence instead of once per step); ``x_mode="sparse"`` keeps the
per-step sparse input product instead. With the dense input side each step is one launch: every
step program compacts the hidden flags itself (:attr:`StepConfig.compact_h`). From :data:`DENSE_H_BATCH` rows on, the hidden product
of a step is one dense cuBLAS product too (:attr:`StepConfig.dense_h`). On a GPU the launches of
a sequence (or of one streaming step) are captured once in a CUDA graph and replayed, since
per-launch host overhead would otherwise dominate a step of a few microseconds.

Vocabulary, the same across the GPU code: a *backend* (``reference``, ``cpu``, ``triton``,
``fused``) is what ``backend=`` names; each product side of a step is *dense* (one GEMM/GEMV over
all columns) or *sparse* (only the columns sent): ``x_mode`` for the input side,
``StepConfig.dense_h`` for the hidden side; the fused training backend's recurrence runs as
``impl="triton"`` (these kernels) or ``impl="torch"`` (its PyTorch twin).

Weights: float32, float16 or bfloat16; products accumulate in float32, state is kept in float32
inside the kernels. No gradients: training uses :mod:`deltarnn.ops.triton_train`.

The kernels follow the spec on non-finite input and on long streams: a NaN change is sent, and
the memory re-sync rule of :mod:`deltarnn.functional.state` (out of ``MEMORY_BOUND``, or every
``resync_every`` steps, ``since_sync`` carried in the state) runs inside the step kernel: each
step flags the rows whose new memory left the bound, and the next step recomputes those rows
densely from x̂, ĥ and the biases.

On a CPU the kernels run only under ``TRITON_INTERPRET=1`` set before Triton is imported (Triton's
interpreter, for tests), so ``backend="auto"`` never picks this backend for ordinary CPU use.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton  # noqa: F401  (soft import: a missing triton disables the backend)
from torch import Tensor

from .. import functional as F
from ..errors import ConfigError, DeviceError, DTypeError, ShapeError
from ..functional import DeltaCounts, DeltaGRUState, DeltaLSTMState
from ..functional.checks import check_threshold
from .triton_common import (
    available,
    capture_graph,
    device_guard,
    interpret,
    kernels,
    launch_scan,
    next_pow2,
    precision,
    segments,
)

NAME = "triton"

WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
X_MODES = ("dense", "sparse")
# Runs (buffers and CUDA graph) kept per packed weights, one per (batch, steps, mode, count...):
# enough for every power-of-two segment length of one shape (see ``triton_common.segments``).
MAX_CACHED_RUNS = 12


def is_available() -> bool:
    return available()


def supports(device: torch.device | str, dtype: torch.dtype, needs_grad: bool) -> bool:
    """CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``; fp32/fp16/bf16; no grad."""
    if needs_grad or dtype not in WEIGHT_DTYPES:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpret()


@dataclass(frozen=True)
class StepConfig:
    """Block sizes of the step kernels.

    Attributes:
        block_b: batch rows per program. block_h: hidden units per program (of every gate).
        block_k: active columns per loop iteration. use_dot: ``tl.dot`` (needs block_b >= 16 on a
        GPU) or a broadcast multiply-reduce (1-4 rows). block_c: columns per iteration of the
        one-program compaction kernel. num_warps: warps per program. dense_h: the hidden
        product of a step as one dense cuBLAS product ``Δh W_hh^T`` (then the step kernel only
        adds it), instead of the sparse-column loop: for large batches, whose union of active
        columns is most of the columns anyway. compact_h: in a whole sequence with the dense
        input side, each step program builds its list of active hidden columns itself (one kernel
        per step, no one-program compaction kernel between steps).
    """

    block_b: int
    block_h: int
    block_k: int
    use_dot: bool
    block_c: int = 512
    num_warps: int = 4
    dense_h: bool = False
    compact_h: bool = True


# From this batch on, the hidden product is dense (cuBLAS): with independent samples the union
# of their active columns is 1 - (1 - o)^B of all of them, e.g. 97 % at B = 32 and o = 10 %, so
# reading only the union saves little and the sparse loop is slower than cuBLAS on the same bytes.
DENSE_H_BATCH = 32


def step_config(batch: int, hidden: int) -> StepConfig:
    """Default block sizes: enough programs to cover the GPU, weight rows of >= 64 bytes."""
    block_h = 16 if hidden <= 2048 else 32
    if batch <= 4:
        block_b = next_pow2(batch)
        # Keep the (block_b, block_k, block_h) broadcast product at 2048 elements.
        return StepConfig(block_b, block_h, max(16, 2048 // (block_b * block_h)), False)
    if batch >= DENSE_H_BATCH:
        # Batch blocks of 16 (tl.dot's minimum): 4x the programs of a block of 64 at B = 64.
        return StepConfig(16, 32, 32, True, dense_h=True)
    return StepConfig(min(64, max(16, next_pow2(batch))), 32, 32, True)


def _use_graph(device: torch.device, use_graph: bool | None) -> bool:
    return device.type == "cuda" if use_graph is None else use_graph and device.type == "cuda"


class TritonPacked:
    """Weights in the layout of the kernels: ``W^T``, one contiguous row per input column.

    Attributes:
        w_ih_t: (I, G*H). w_hh_t: (H, G*H). gates: 3 (GRU) or 4 (LSTM).
        m0: (4H,) float32, the memory of the biases (the memory re-sync starts from it).
    """

    def __init__(
        self,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None = None,
        bias_hh: Tensor | None = None,
    ) -> None:
        if weight_ih.dim() != 2 or weight_hh.dim() != 2:
            raise ShapeError(
                f"weight_ih and weight_hh must be 2-D (G*H, I) and (G*H, H); got "
                f"{tuple(weight_ih.shape)} and {tuple(weight_hh.shape)}"
            )
        hidden = weight_hh.shape[1]
        rows = weight_hh.shape[0]
        if rows not in (3 * hidden, 4 * hidden) or weight_ih.shape[0] != rows:
            raise ShapeError(
                f"weight_hh must be (3H, H) or (4H, H) and weight_ih (G*H, I) with the same rows; "
                f"got {tuple(weight_ih.shape)} and {tuple(weight_hh.shape)}"
            )
        if weight_ih.dtype not in WEIGHT_DTYPES or weight_hh.dtype != weight_ih.dtype:
            raise DTypeError(
                f"triton backend weights must both be one of {WEIGHT_DTYPES}; got "
                f"{weight_ih.dtype} and {weight_hh.dtype}"
            )
        self.gates = rows // hidden
        self.hidden = hidden
        self.inputs = weight_ih.shape[1]
        self.dtype = weight_ih.dtype
        self.device = weight_ih.device
        self.w_ih_t = weight_ih.detach().t().contiguous()
        self.w_hh_t = weight_hh.detach().t().contiguous()
        # The memory the biases start a stream at, (4H,) float32: where the re-sync starts from.
        initial = F.lstm_initial_memory if self.gates == 4 else F.gru_initial_memory
        biases = [None if b is None else b.detach().float() for b in (bias_ih, bias_hh)]
        self.m0 = initial(*biases, weight_ih.detach().float()).contiguous()
        self.runs: OrderedDict[tuple, _SequenceRun] = OrderedDict()
        self._f32: dict[str, Tensor] = {}

    # The dense products (cuBLAS) run in float32 whatever the weights' dtype, so that the deltas
    # and products reach the float32 memories unrounded: half weights are widened once, on
    # first use.
    @property
    def w_ih_t_f32(self) -> Tensor:
        return self._widened("ih", self.w_ih_t)

    @property
    def w_hh_t_f32(self) -> Tensor:
        return self._widened("hh", self.w_hh_t)

    def _widened(self, name: str, weight: Tensor) -> Tensor:
        if weight.dtype == torch.float32:
            return weight
        if name not in self._f32:
            self._f32[name] = weight.float()
        return self._f32[name]

    @property
    def kind(self) -> str:
        return "lstm" if self.gates == 4 else "gru"


def pack(
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> TritonPacked:
    return TritonPacked(weight_ih, weight_hh, bias_ih, bias_hh)


# ---------------------------------------------------------------------------------------------
# Launch helpers (no host synchronisation inside: everything here can be graph-captured)
# ---------------------------------------------------------------------------------------------


def _launch_encode(k, v, vhat_in, vhat_out, theta, delta, flags):
    batch, features = v.shape
    block_b = min(next_pow2(batch), 16)
    block_f = 64
    k.encode_kernel[(triton.cdiv(features, block_f),)](
        v, vhat_in, vhat_out, theta, delta, flags, batch, features,
        BLOCK_B=block_b, BLOCK_F=block_f,
    )  # fmt: skip


def _launch_prepare(k, cfg, x, xhat, theta_x, dx, idx_x, flags_h, idx_h, n, bound_clear, encode_x):
    batch, inputs = xhat.shape
    k.prepare_step_kernel[(1,)](
        x, xhat, theta_x, dx, idx_x, flags_h, idx_h, n, bound_clear, batch, inputs,
        flags_h.shape[0],
        ENCODE_X=encode_x, BLOCK_B=min(next_pow2(batch), 16), BLOCK_C=cfg.block_c,
        num_warps=cfg.num_warps,
    )  # fmt: skip


class Resync(NamedTuple):
    """The buffers of one step's memory re-sync (see ``delta_step_kernel``).

    Attributes:
        xheld: (B, I) x̂ after this step's encoding. bound_in, bound_out, bound_clear: (B,)
        int32 out-of-bound flags read, set and cleared by the step. since_in, since_out: (B,)
        int64 ``since_sync`` before and after the step. every: the period (0: bound rule only).
    """

    xheld: Tensor
    bound_in: Tensor
    bound_out: Tensor
    bound_clear: Tensor
    since_in: Tensor
    since_out: Tensor
    every: int


def _launch_step(
    k, cfg, packed, precision, *, dx, idx_x, gx, dh, idx_h, n, m, h, c, out, hhat_in, hhat_out,
    theta_h, dh_next, flags_h, encode_next, resync, ghh=None, flags_in=None, flags_clear=None,
):  # fmt: skip
    batch, hidden = h.shape
    if cfg.dense_h:
        torch.matmul(dh, packed.w_hh_t_f32, out=ghh)
    grid = (triton.cdiv(hidden, cfg.block_h), triton.cdiv(batch, cfg.block_b))
    k.delta_step_kernel[grid](
        packed.w_ih_t, dx, idx_x, h if gx is None else gx,
        packed.w_hh_t, dh, h if ghh is None else ghh, idx_h, n,
        m, h, h if c is None else c, h if out is None else out,
        hhat_in, hhat_out, theta_h, dh_next, flags_h,
        flags_h if flags_in is None else flags_in, flags_h if flags_clear is None else flags_clear,
        resync.xheld, packed.m0, resync.bound_in, resync.bound_out, resync.bound_clear,
        resync.since_in, resync.since_out,
        batch, packed.inputs, hidden, int(encode_next), resync.every, BOUND=F.MEMORY_BOUND,
        LSTM=packed.gates == 4, X_SPARSE=gx is None, H_SPARSE=not cfg.dense_h,
        COMPACT_H=flags_in is not None, STORE_OUT=out is not None,
        USE_DOT=cfg.use_dot, PRECISION=precision,
        BLOCK_B=cfg.block_b, BLOCK_H=cfg.block_h, BLOCK_K=cfg.block_k, BLOCK_C=cfg.block_c,
        num_warps=cfg.num_warps,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Whole sequences
# ---------------------------------------------------------------------------------------------


class _SequenceRun:
    """Static buffers for one (kind, batch, steps, x_mode, count), and the CUDA graph of a run.

    ``load`` copies the inputs into the buffers, ``run`` executes (eagerly, or by replaying the
    graph captured on the first GPU run), and the results are read from the buffers.
    """

    def __init__(
        self,
        packed: TritonPacked,
        batch: int,
        steps: int,
        x_mode: str,
        count: bool,
        config: StepConfig,
        use_graph: bool,
        resync_every: int,
    ) -> None:
        dev, f32, i32 = packed.device, torch.float32, torch.int32
        inputs, hidden, gates = packed.inputs, packed.hidden, packed.gates
        self.packed, self.steps, self.x_mode, self.count = packed, steps, x_mode, count
        self.resync_every = resync_every
        self.config, self.use_graph = config, use_graph
        self.precision = precision(torch.float32, dev)
        self.graph: torch.cuda.CUDAGraph | None = None

        def zeros(*shape, dtype=f32):
            return torch.zeros(*shape, dtype=dtype, device=dev)

        # Inputs of a call.
        self.x = zeros(steps, batch, inputs, dtype=packed.dtype)
        self.theta_x, self.theta_h = zeros(inputs), zeros(hidden)
        self.h0, self.c0, self.hhat0 = (
            zeros(batch, hidden),
            zeros(batch, hidden),
            zeros(batch, hidden),
        )
        self.xhat0, self.m0 = zeros(batch, inputs), zeros(batch, 4 * hidden)
        # Working state; ĥ alternates between two slots (step t reads slot t%2, writes the other).
        self.h, self.c, self.xhat = zeros(batch, hidden), zeros(batch, hidden), zeros(batch, inputs)
        self.hhat, self.m = zeros(2, batch, hidden), zeros(batch, 4 * hidden)
        # Deltas: a two-slot ring, or one slot per step when the sends are counted.
        self.dh = zeros(steps + 1 if count else 2, batch, hidden)
        self.dx = zeros(steps if count or x_mode == "dense" else 1, batch, inputs)
        self.gx = zeros(steps, batch, gates * hidden) if x_mode == "dense" else None
        self.ghh = zeros(batch, gates * hidden) if config.dense_h else None
        # Each step program compacts the hidden flags itself (dense input side only): the flags
        # are a ring of three (read, set, cleared), the lists one row of H per program.
        self.compact_h = config.compact_h and x_mode == "dense" and not config.dense_h
        self.flags = zeros(3 if self.compact_h else 1, hidden, dtype=i32)
        programs = triton.cdiv(hidden, config.block_h) * triton.cdiv(batch, config.block_b)
        self.idx_x = zeros(max(inputs, 1), dtype=i32)
        self.idx_h = zeros(programs if self.compact_h else 1, hidden, dtype=i32)
        self.n = zeros(2, dtype=i32)
        self.out = zeros(steps, batch, hidden)
        # Re-sync: x̂ after each step (dense input side; the sparse side updates x̂ in place),
        # out-of-bound flags per row in a ring of three, since_sync in a ring of two.
        self.xheld = zeros(steps, batch, inputs) if x_mode == "dense" else None
        self.bound = zeros(3, batch, dtype=i32)
        self.since0 = zeros(batch, dtype=torch.int64)
        self.since = zeros(2, batch, dtype=torch.int64)
        self.since_given: Tensor | None = None

    def load(self, x: Tensor, state, theta_x: Tensor, theta_h: Tensor) -> None:
        self.x.copy_(x)
        self.theta_x.copy_(theta_x)
        self.theta_h.copy_(theta_h)
        self.h0.copy_(state.h)
        self.xhat0.copy_(state.x_hat)
        self.hhat0.copy_(state.h_hat)
        self.m0.copy_(state.m)
        if self.packed.gates == 4:
            self.c0.copy_(state.c)
        self.since_given = state.since_sync
        if self.resync_every > 0:
            self.since0.copy_(state.since_sync.expand(self.since0.shape[0]))

    def launch(self) -> None:
        """Every kernel of the sequence, in order (what the graph captures)."""
        k, cfg, packed, steps = kernels(), self.config, self.packed, self.steps
        lstm = packed.gates == 4
        self.h.copy_(self.h0)
        self.c.copy_(self.c0)
        self.xhat.copy_(self.xhat0)
        self.hhat[1].copy_(self.hhat0)
        self.m.copy_(self.m0)
        self.flags.zero_()
        self.since[0].copy_(self.since0)
        # The first step's out-of-bound flags come from the memory the run starts with.
        self.bound.zero_()
        self.bound[0].copy_(_out_of_bound(self.m))
        if self.gx is not None:
            launch_scan(k, self.x, self.xhat, self.theta_x, self.dx, None, self.xheld)
            dx2 = self.dx.view(-1, packed.inputs)
            gx2 = self.gx.view(-1, packed.gates * packed.hidden)
            torch.matmul(dx2, packed.w_ih_t_f32, out=gx2)
        # Δh of the first step: h0 against ĥ0.
        flags = self.flags
        _launch_encode(k, self.h, self.hhat[1], self.hhat[0], self.theta_h, self.dh[0], flags[0])
        ring = self.dh.shape[0]
        for t in range(steps):
            sparse_x = self.gx is None
            dx = self.dx[t if self.dx.shape[0] > 1 else 0]
            bound_clear = self.bound[(t + 2) % 3]
            resync = Resync(
                self.xhat if sparse_x else self.xheld[t], self.bound[t % 3],
                self.bound[(t + 1) % 3], bound_clear, self.since[t % 2], self.since[(t + 1) % 2],
                self.resync_every,
            )  # fmt: skip
            if self.compact_h:
                lists = dict(
                    flags_h=flags[(t + 1) % 3], flags_in=flags[t % 3],
                    flags_clear=flags[(t + 2) % 3],
                )  # fmt: skip
            else:
                lists = dict(flags_h=flags[0])
                if sparse_x or not cfg.dense_h:  # else there is no list of columns to build
                    _launch_prepare(
                        k, cfg, self.x[t], self.xhat, self.theta_x, dx, self.idx_x, flags[0],
                        self.idx_h[0], self.n, bound_clear, sparse_x,
                    )  # fmt: skip
            _launch_step(
                k, cfg, packed, self.precision,
                dx=dx, idx_x=self.idx_x, gx=None if sparse_x else self.gx[t],
                dh=self.dh[t % ring], idx_h=self.idx_h, n=self.n,
                m=self.m, h=self.h, c=self.c if lstm else None, out=self.out[t],
                hhat_in=self.hhat[t % 2], hhat_out=self.hhat[(t + 1) % 2],
                theta_h=self.theta_h, dh_next=self.dh[(t + 1) % ring],
                encode_next=t + 1 < steps, resync=resync, ghh=self.ghh, **lists,
            )  # fmt: skip

    def run(self) -> None:
        if not self.use_graph:
            self.launch()
            return
        if self.graph is None:
            self.graph, _ = capture_graph(self.launch)
        self.graph.replay()

    def results(self, state_dtype: torch.dtype, out_dtype: torch.dtype):
        """(output, state, counts) of the last run, copied out of the buffers."""
        steps = self.steps

        def out_of(buffer: Tensor, dtype: torch.dtype = state_dtype) -> Tensor:
            return buffer.to(dtype, copy=True)

        hhat = out_of(self.hhat[(steps - 1) % 2])
        h, xhat, m = out_of(self.h), out_of(self.xhat), out_of(self.m)
        # With a period the counter is kept per sample; without, returned as given (the spec).
        since = self.since[steps % 2].clone() if self.resync_every > 0 else self.since_given
        if self.packed.gates == 3:
            state = DeltaGRUState(h, xhat, hhat, m, since)
        else:
            state = DeltaLSTMState(h, out_of(self.c), xhat, hhat, m, since)
        counts = F.count_sends(self.dx, self.dh[:steps]) if self.count else None
        return out_of(self.out, out_dtype), state, counts


def _out_of_bound(m: Tensor) -> Tensor:
    """Per row of a memory (B, 4H): whether an element is not finite or above MEMORY_BOUND."""
    return (~(m.abs() <= F.MEMORY_BOUND)).any(dim=1)


def _check_call(kind: str, x: Tensor, state, packed: TritonPacked) -> None:
    gates = 3 if kind == "gru" else 4
    if packed.gates != gates:
        raise ShapeError(f"packed weights have {packed.gates} gates; {kind} needs {gates}")
    if x.dim() != 3 or x.shape[2] != packed.inputs:
        raise ShapeError(f"x must be (T, B, {packed.inputs}); got {tuple(x.shape)}")
    if state.h.shape != (x.shape[1], packed.hidden):
        raise ShapeError(
            f"state.h must be ({x.shape[1]}, {packed.hidden}); got {tuple(state.h.shape)}"
        )
    if x.device != packed.device:
        raise DeviceError(f"x is on {x.device} but the weights are on {packed.device}")


def run_sequence(
    x: Tensor,
    state: DeltaGRUState | DeltaLSTMState,
    packed: TritonPacked,
    theta_x: Tensor,
    theta_h: Tensor,
    *,
    count: bool = False,
    resync_every: int = 0,
    x_mode: str = "dense",
    use_graph: bool | None = None,
    config: StepConfig | None = None,
) -> tuple[Tensor, DeltaGRUState | DeltaLSTMState, DeltaCounts | None]:
    """One delta GRU or LSTM layer over a sequence (the kind follows the packed weights).

    Args:
        x: (T, B, I). state: the layer's state before the first step.
        packed: :func:`pack` of the layer's weights. theta_x (I,), theta_h (H,): thresholds.
        count: also return :class:`DeltaCounts`.
        resync_every: period of the dense memory re-sync (0: only the bound rule), as in
            :func:`deltarnn.functional.delta_gru`.
        x_mode: ``"dense"``: input deltas of all steps by one scan kernel, then one product over
            time (as the spec computes it); ``"sparse"``: per step, reading only the input
            columns sent.
        use_graph: capture and replay a CUDA graph (default: on CUDA devices).
        config: block sizes (default :func:`step_config`).

    Returns:
        ``(output, state, counts)`` as :func:`deltarnn.functional.delta_gru` / ``delta_lstm``.
    """
    kind = packed.kind
    _check_call(kind, x, state, packed)
    if x_mode not in X_MODES:
        raise ConfigError(f"x_mode must be one of {X_MODES}; got {x_mode!r}")
    resync_every = _period(resync_every)
    steps, batch = x.shape[0], x.shape[1]
    if steps == 0:
        empty = x.new_zeros(0, batch, packed.hidden)
        counts = F.count_sends(x.new_zeros(0, batch, packed.inputs), empty) if count else None
        return empty, state, counts
    config = config or step_config(batch, packed.hidden)
    graph = _use_graph(x.device, use_graph)
    outs, parts = [], []
    with device_guard(x.device):
        for start, length in segments(steps, graph):
            run = _cached_run(packed, batch, length, x_mode, count, config, graph, resync_every)
            run.load(x[start : start + length], state, theta_x, theta_h)
            run.run()
            out, state, counts = run.results(state.h.dtype, x.dtype)
            outs.append(out)
            parts.append(counts)
    if len(outs) == 1:
        return outs[0], state, parts[0]
    counts = DeltaCounts(*map(torch.cat, zip(*parts, strict=True))) if count else None
    return torch.cat(outs), state, counts


def _cached_run(packed, batch, steps, x_mode, count, config, graph, resync_every) -> _SequenceRun:
    """The run of this shape from the packed weights' cache (least recently used goes first).
    The period is part of the key: a captured graph holds it as a kernel argument."""
    key = (batch, steps, x_mode, count, config, graph, resync_every)
    run = packed.runs.pop(key, None)
    if run is None:
        run = _SequenceRun(packed, batch, steps, x_mode, count, config, graph, resync_every)
    packed.runs[key] = run
    while len(packed.runs) > MAX_CACHED_RUNS:
        packed.runs.popitem(last=False)
    return run


def gru(x, state, packed, theta_x, theta_h, *, count=False, resync_every=0):
    """Backend contract: :func:`deltarnn.functional.delta_gru` (no ``h_transform``), re-sync
    rule included."""
    _check_call("gru", x, state, packed)
    return run_sequence(x, state, packed, theta_x, theta_h, count=count, resync_every=resync_every)


def lstm(x, state, packed, theta_x, theta_h, *, count=False, resync_every=0):
    """Backend contract: :func:`deltarnn.functional.delta_lstm` (as :func:`gru`)."""
    _check_call("lstm", x, state, packed)
    return run_sequence(x, state, packed, theta_x, theta_h, count=count, resync_every=resync_every)


def _period(resync_every) -> int:
    if isinstance(resync_every, bool) or not isinstance(resync_every, int) or resync_every < 0:
        raise ConfigError(f"resync_every must be an int >= 0, got {resync_every!r}")
    return resync_every


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


class TritonStreamer:
    """A delta GRU or LSTM layer run one frame at a time, with preallocated buffers.

    Each :meth:`step` is the two kernel launches of one step (input side sparse too); on a GPU
    they are captured in CUDA graphs once (one per parity of the ĥ/Δh double buffers) and every
    step is a copy of the frame plus one graph replay.

    Args:
        packed: :func:`pack` of the layer's weights.
        state: the state to start from (e.g. :func:`deltarnn.functional.gru_initial_state`).
        theta_x, theta_h: thresholds, floats or tensors broadcastable to (I,) and (H,).
        resync_every: period of the dense memory re-sync (0: only the bound rule), as in
            :func:`deltarnn.functional.delta_gru`.
        use_graph: capture CUDA graphs (default: on CUDA devices).
        config: block sizes (default :func:`step_config`).
        frames: a float32 (B, I) buffer the frames are read from, instead of a buffer of its own
            that :meth:`step` copies each frame into: the h buffer of the layer below, in a stack
            (:class:`deltarnn.ops.triton_stream.StackStreamer`).

    Example::

        streamer = TritonStreamer(pack(w_ih, w_hh), gru_initial_state(w_ih, b_ih, b_hh, 1), 0.1, 0.1)
        for frame in frames:          # frame: (B, I)
            h = streamer.step(frame)  # (B, H), float32, overwritten by the next step
    """

    def __init__(
        self,
        packed: TritonPacked,
        state: DeltaGRUState | DeltaLSTMState,
        theta_x: Tensor | float,
        theta_h: Tensor | float,
        *,
        resync_every: int = 0,
        use_graph: bool | None = None,
        config: StepConfig | None = None,
        frames: Tensor | None = None,
    ) -> None:
        dev, f32, i32 = packed.device, torch.float32, torch.int32
        self.resync_every = _period(resync_every)
        inputs, hidden = packed.inputs, packed.hidden
        check_threshold(theta_x, "theta_x", inputs)
        check_threshold(theta_h, "theta_h", hidden)
        batch = state.h.shape[0]
        if frames is not None and (
            frames.shape != (batch, inputs) or frames.dtype != f32 or frames.device != dev
        ):
            raise ShapeError(
                f"frames must be a float32 ({batch}, {inputs}) buffer on {dev}; got "
                f"{frames.dtype} {tuple(frames.shape)} on {frames.device}"
            )
        self.packed, self.batch = packed, batch
        self.config = config or step_config(batch, hidden)
        self.precision = precision(torch.float32, dev)
        self.state_dtype = state.h.dtype

        def zeros(*shape, dtype=f32):
            return torch.zeros(*shape, dtype=dtype, device=dev)

        self.theta_x = zeros(inputs).copy_(torch.as_tensor(theta_x).expand(inputs))
        self.theta_h = zeros(hidden).copy_(torch.as_tensor(theta_h).expand(hidden))
        self.x = zeros(batch, inputs) if frames is None else frames
        self.dx, self.xhat = zeros(batch, inputs), zeros(batch, inputs)
        self.h, self.c, self.m = (
            zeros(batch, hidden),
            zeros(batch, hidden),
            zeros(batch, 4 * hidden),
        )
        self.hhat, self.dh = zeros(2, batch, hidden), zeros(2, batch, hidden)
        self.flags = zeros(hidden, dtype=i32)
        self.idx_x, self.idx_h = zeros(max(inputs, 1), dtype=i32), zeros(hidden, dtype=i32)
        self.n = zeros(2, dtype=i32)
        self.ghh = zeros(batch, packed.gates * hidden) if self.config.dense_h else None
        # Re-sync: out-of-bound flags per row, read from slot p and set in slot 1 - p at parity
        # p (the prepare kernel clears it first; slot 2 is what the step kernel "clears"), and
        # since_sync in a ring of two.
        self.bound = zeros(3, batch, dtype=i32)
        self.since = zeros(2, batch, dtype=torch.int64)
        self.since_given: Tensor | None = None
        self.parity = 0
        self.graphs: list[torch.cuda.CUDAGraph] | None = None
        self.reset(state)
        if _use_graph(dev, use_graph):
            self._capture(state)

    def reset(self, state: DeltaGRUState | DeltaLSTMState) -> None:
        """Start again from ``state``: copy it in, and delta-encode its h for the first step."""
        if state.h.shape != (self.batch, self.packed.hidden):
            raise ShapeError(
                f"state.h must be ({self.batch}, {self.packed.hidden}); got {tuple(state.h.shape)}"
            )
        self.h.copy_(state.h)
        self.xhat.copy_(state.x_hat)
        self.hhat[1].copy_(state.h_hat)
        self.m.copy_(state.m)
        if self.packed.gates == 4:
            self.c.copy_(state.c)
        self.flags.zero_()
        self.bound.zero_()
        self.bound[0].copy_(_out_of_bound(self.m))
        self.since_given = state.since_sync.clone()
        if self.resync_every > 0:
            self.since[0].copy_(state.since_sync.expand(self.batch))
        with device_guard(self.packed.device):
            _launch_encode(
                kernels(), self.h, self.hhat[1], self.hhat[0], self.theta_h, self.dh[0], self.flags
            )
        self.parity = 0

    def _launch(self, parity: int) -> None:
        k, cfg = kernels(), self.config
        _launch_prepare(
            k, cfg, self.x, self.xhat, self.theta_x, self.dx, self.idx_x, self.flags, self.idx_h,
            self.n, self.bound[1 - parity], True,
        )  # fmt: skip
        resync = Resync(
            self.xhat, self.bound[parity], self.bound[1 - parity], self.bound[2],
            self.since[parity], self.since[1 - parity], self.resync_every,
        )  # fmt: skip
        _launch_step(
            k, cfg, self.packed, self.precision,
            dx=self.dx, idx_x=self.idx_x, gx=None, dh=self.dh[parity], idx_h=self.idx_h, n=self.n,
            m=self.m, h=self.h, c=self.c if self.packed.gates == 4 else None, out=None,
            hhat_in=self.hhat[parity], hhat_out=self.hhat[1 - parity], theta_h=self.theta_h,
            dh_next=self.dh[1 - parity], flags_h=self.flags, encode_next=True, resync=resync,
            ghh=self.ghh,
        )  # fmt: skip

    def _capture(self, state) -> None:
        with device_guard(self.packed.device):
            # The warm-up compiles both parities; reset() then undoes their effect.
            graphs = [capture_graph(lambda p=parity: self._launch(p))[0] for parity in (0, 1)]
            self.reset(state)
        self.graphs = graphs

    def step(self, x: Tensor) -> Tensor:
        """Advance one frame. x: (B, I). Returns h (B, H), a float32 buffer the next step
        overwrites (clone it to keep it)."""
        self.x.copy_(x)
        if self.graphs is None:
            with device_guard(self.packed.device):
                self._launch(self.parity)
        else:
            self.graphs[self.parity].replay()
        self.parity ^= 1
        return self.h

    def state(self) -> DeltaGRUState | DeltaLSTMState:
        """The layer's state after the last step, as the spec returns it (a copy)."""
        dt = self.state_dtype

        def copy(t: Tensor) -> Tensor:
            return t.to(dt, copy=True)

        hhat = copy(self.hhat[1 - self.parity])
        periodic = self.resync_every > 0
        since = (self.since[self.parity] if periodic else self.since_given).clone()
        if self.packed.gates == 4:
            return DeltaLSTMState(
                copy(self.h), copy(self.c), copy(self.xhat), hhat, copy(self.m), since
            )
        return DeltaGRUState(copy(self.h), copy(self.xhat), hhat, copy(self.m), since)


# The backend's stack streamer (the protocol of deltarnn.ops), built on TritonStreamer above,
# and the CUDA kernels of the delta layer operators (torch.ops.deltarnn.*_layer), which the
# operators' module gets by importing this one.
from . import triton_custom_ops  # noqa: E402, F401
from .triton_stream import StackStreamer  # noqa: E402, F401
