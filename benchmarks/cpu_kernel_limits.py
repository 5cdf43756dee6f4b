"""What bounds the CPU engine on this machine: memory bandwidth, loop throughput, fixed cost.

Prints one line per measurement (median of repeats, CPU time of this thread):

* read bandwidth: a sequential sum over 256 MiB (DRAM), and the engine's own four-column pass
  over random 12 KiB columns of a 24 MiB matrix (the H = I = 1024 GRU's weights);
* the same pass on a matrix that stays in L2, float32 and int8 weights (loop throughput);
* ``torch`` one-row ``addmm`` over the 12 MiB recurrent matrix: what ``nn.GRU`` does per step;
* the engine's per-step floor at H = I = 1024 when nothing is sent (encoding, gates), the cost
  of one call (T = 1) and of one streamer step;
* the split of a 10 % step (controlled inputs, calibrated Θh as in the sweep) between the input
  side and the hidden side, by freezing one side with an infinite threshold;
* how many 8-wide (ymm) fused multiply-adds and divisions the compiled float32 GRU kernel holds.

    python benchmarks/cpu_kernel_limits.py
"""

from __future__ import annotations

import re
import statistics
import time

import numpy as np
import torch
from numba import njit

from deltarnn import functional as F
from deltarnn.bench.inputs import THETA_X, calibrate, controlled_sequence
from deltarnn.ops import _cpu_kernels as K
from deltarnn.ops import cpu

_FLAGS = {"error_model": "numpy", "fastmath": {"contract"}}


@njit(fastmath=True)
def _sum(a):
    s = np.float32(0.0)
    for i in range(a.shape[0]):
        s += a[i]
    return s


@njit(**_FLAGS)
def _passes(w, ws, idxs, vals, m):
    for s in range(idxs.shape[0]):
        K._accumulate(w, ws, idxs[s], vals[s], idxs.shape[1], m, m.shape[0], 0)


def median_time(fn, repeats=9):
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def column_pass(columns: int, dtype, sent: int, steps: int = 50) -> tuple[float, float]:
    """GB/s of weights read and GMAC/s of the engine's pass over ``sent`` random columns."""
    rng = np.random.default_rng(0)
    if dtype == np.int8:
        w = rng.integers(-127, 128, size=(columns, 3072), dtype=np.int8)
    else:
        w = rng.random((columns, 3072), dtype=np.float32)
    ws = np.ones(columns, np.float32)
    idxs = np.sort(
        np.stack([rng.choice(columns, sent, replace=False) for _ in range(steps)]), axis=1
    )
    vals = rng.random((steps, sent), dtype=np.float32)
    m = np.zeros(3072, np.float32)
    t = median_time(lambda: _passes(w, ws, idxs, vals, m))
    macs = steps * sent * 3072
    return macs * w.itemsize / t / 1e9, macs / t / 1e9


def main() -> None:
    torch.set_num_threads(1)
    big = np.ones(64 << 20, np.float32)
    print(
        f"sequential read, 256 MiB:            {big.nbytes / median_time(lambda: _sum(big)) / 1e9:6.1f} GB/s"
    )
    for label, cols, dtype, sent in (
        ("random columns, 24 MiB, float32", 2048, np.float32, 204),
        ("random columns, 24 MiB, int8   ", 2048, np.int8, 204),
        ("columns in L2, 96 KiB, float32 ", 8, np.float32, 8),
        ("columns in L2, 24 KiB, int8    ", 8, np.int8, 8),
    ):
        gbs, gmacs = column_pass(cols, dtype, sent)
        print(f"{label}:     {gbs:6.1f} GB/s  {gmacs:6.1f} GMAC/s")
    w_hh = torch.randn(3072, 1024)
    h = torch.randn(1, 1024)
    bias = torch.zeros(3072)
    t = median_time(lambda: [torch.addmm(bias, h, w_hh.t()) for _ in range(20)]) / 20
    print(
        f"torch addmm 1x1024 @ 1024x3072:      {w_hh.numel() * 4 / t / 1e9:6.1f} GB/s  "
        f"{t * 1e6:7.1f} us"
    )
    w_ih = torch.randn(3072, 1024) * 0.03
    packed = cpu.pack(w_ih, w_hh * 0.03)
    state = F.gru_initial_state(w_ih, None, None, 1)
    x = torch.zeros(1000, 1, 1024)
    never = torch.full((1024,), 1e9)
    t = median_time(lambda: cpu.gru(x, state, packed, never, never), repeats=5) / 1000
    print(f"engine step, nothing sent, H = 1024: {t * 1e6:6.1f} us")
    t = median_time(lambda: [cpu.gru(x[:1], state, packed, never, never) for _ in range(100)])
    print(f"one call with T = 1, nothing sent:   {t / 100 * 1e6:6.1f} us")
    streamer = cpu.CPUStreamer(packed, state, never, never)
    frame = x[0]
    t = median_time(lambda: [streamer.step(frame) for _ in range(1000)])
    print(f"one streamer step, nothing sent:     {t / 1000 * 1e6:6.1f} us")
    split_of_a_step(0.10)
    # Cached machine code cannot be inspected: compile an uncached copy of the kernel.
    options = {k: v for k, v in K.gru_sequence.targetoptions.items() if k != "cache"}
    kernel = njit(**options)(K.gru_sequence.py_func)
    kernel(*streamer._args)
    asm = kernel.inspect_asm(kernel.signatures[0])
    fma = len(re.findall(r"vfmadd\d+ps\s[^\n]*ymm", asm))
    div = len(re.findall(r"vdivps\s[^\n]*ymm", asm))
    print(f"float32 GRU kernel machine code:     {fma} vfmadd*ps and {div} vdivps on ymm registers")


def split_of_a_step(occupancy: float, hidden: int = 1024, steps: int = 100) -> None:
    """Time per step with both sides, the input side only, and neither (same warm state)."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(hidden, hidden)
    w_ih, w_hh = gru.weight_ih_l0.detach(), gru.weight_hh_l0.detach()
    packed = cpu.pack(w_ih, w_hh)
    fresh = F.gru_initial_state(w_ih, gru.bias_ih_l0.detach(), gru.bias_hh_l0.detach(), 1)
    x_all = controlled_sequence(20 + steps, 1, hidden, occupancy)
    prefix, x = x_all[:20], x_all[20:]
    tx = torch.full((hidden,), THETA_X)

    def warm(theta_h):
        th = torch.full((hidden,), theta_h)
        return cpu.gru(prefix, fresh, packed, tx, th)[1], th

    def occupancy_h(theta_h):
        state, th = warm(theta_h)
        return cpu.gru(x, state, packed, tx, th, count=True)[2].nh.double().mean().item() / hidden

    theta_h, occ_h = calibrate(occupancy_h, occupancy)
    state, th = warm(theta_h)
    never = torch.full((hidden,), 1e9)
    for label, thresholds in (
        ("both sides", (tx, th)),
        ("input side only", (tx, never)),
        ("nothing sent", (never, never)),
    ):
        t = median_time(lambda a=thresholds: cpu.gru(x, state, packed, *a)) / steps
        print(f"{occupancy:.0%} step (o_h {occ_h:.1%}), {label + ':':17s} {t * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
