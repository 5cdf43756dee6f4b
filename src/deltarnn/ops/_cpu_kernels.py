"""Compiled (numba) kernels of the CPU backend. Imported only through :mod:`deltarnn.ops.cpu`.

Shape legend: T time steps, B batch, I input features, H hidden units, G gates (3 GRU, 4 LSTM).

Weights are packed column-contiguous: ``wx`` is (I, G*H) and ``wh`` is (H, G*H), so the G*H
weights an input feeds are one contiguous row. A sent delta ``d_j`` then costs one contiguous
multiply-add ``m += d_j * w[j]`` and a column that was not sent is never read: the bytes of
weights fetched fall with the occupancy, which is what makes a memory-bound step faster.

Everything here works on the state in place: the caller (``cpu.py``) owns copies.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit
from numba.core import cgutils, types
from numba.extending import intrinsic

# error_model="numpy": no ZeroDivisionError check on float division, which would stop LLVM from
# vectorising the gate loops. fastmath "contract" only allows fused multiply-add; no reassociation
# of sums, no assumption that values are finite, so NaN/inf propagate as in PyTorch.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}
# numba's IR-level inlining ("always") re-types the callee at every call site: with every helper
# inlined, compiling one stack-step specialisation took 46 s. Only the small per-element and
# per-column helpers the inner loops call are inlined (_TINY); the larger pieces are separate
# functions that LLVM links in (first streamer step 18 s, per-frame and whole-sequence times
# unchanged within noise).
_INLINE = {"inline": "never", "error_model": "numpy", "fastmath": {"contract"}}
_TINY = {"inline": "always", "error_model": "numpy", "fastmath": {"contract"}}

# Past |x| = 7.9053 the rational approximation below is within 1 ulp of +-1 in float32.
_TANH_CLAMP = np.float32(7.90531110763549805)


@njit(**_TINY)
def _tanh_f32(a):
    """tanh for float32, max abs error 2.7e-7: a [13/6] rational approximation (as in Eigen).

    Unlike ``np.tanh`` (a libm call per element) it is branch-free arithmetic, so the gate loops
    vectorise; at H = 1024 that is about 10x faster, which matters at low occupancy where the
    gates are a large share of the step.
    """
    # Clamped so that NaN stays NaN (a comparison with NaN is false, so it keeps ``a``).
    x = -_TANH_CLAMP if a < -_TANH_CLAMP else a
    x = _TANH_CLAMP if x > _TANH_CLAMP else x
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return x * p / q


@njit(**_TINY)
def _sigmoid_f32(a):
    # sigma(a) = (1 + tanh(a / 2)) / 2: max abs error 1.7e-7, vectorisable like _tanh_f32.
    return np.float32(0.5) + np.float32(0.5) * _tanh_f32(np.float32(0.5) * a)


@njit(**_TINY)
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


@njit(**_TINY)
def _send(v, v_hat, theta, j, idx, val, n):
    """Slot n gets column j and its delta; v_hat[j] = v[j] if sent. Returns the new count.

    Branch-free (the slot is always written, the count advances by the mask), so random masks
    cost no mispredicted branches.
    """
    d = v[j] - v_hat[j]
    send = not abs(d) <= theta[j]
    idx[n] = j
    val[n] = d
    v_hat[j] = v[j] if send else v_hat[j]
    return n + send


@njit(**_INLINE)
def _encode(v, v_hat, theta, idx, val, mask):
    """Delta-encode one vector against the last values sent; list the sent columns.

    ``send = not |v - v_hat| <= theta`` (above the threshold, or NaN), ``v_hat = v`` where sent.
    Writes the sent indices (ascending) and deltas to the front of ``idx``/``val`` and returns
    how many there are.

    A vectorised first pass writes the mask; the second visits only 8-byte words of it that
    hold a send, so a sparse step costs about half of one branch-free pass over every element.
    ``mask`` is a uint8 buffer of at least ``len(v)`` rounded up to 8.
    """
    size = v.shape[0]
    for j in range(size):
        mask[j] = not abs(v[j] - v_hat[j]) <= theta[j]
    words = mask.view(np.uint64)
    full = size // 8
    n = 0
    for w in range(full):
        if words[w] != 0:
            for j in range(8 * w, 8 * w + 8):
                n = _send(v, v_hat, theta, j, idx, val, n)
    for j in range(8 * full, size):
        n = _send(v, v_hat, theta, j, idx, val, n)
    return n


@njit(**_TINY)
def _pass(o, w, ws, idx, val, q, cnt, lo, hi):
    """``o[k - lo] += sum over the cnt (1 to 4) columns from slot q of val * ws * w[col, k]``,
    for k in [lo, hi).

    Up to four sent columns per pass over ``o``: one load and one store of ``o`` per four
    multiply-adds instead of per one (measured about 3x faster than a pass per column at
    H = 1024). Written on slices that start at 0: LLVM left loops with a variable start scalar
    (measured 4x slower).
    """
    size = hi - lo
    d0 = val[q] * ws[idx[q]]
    w0 = w[idx[q], lo:hi]
    if cnt == 4:
        w1 = w[idx[q + 1], lo:hi]
        w2 = w[idx[q + 2], lo:hi]
        w3 = w[idx[q + 3], lo:hi]
        d1 = val[q + 1] * ws[idx[q + 1]]
        d2 = val[q + 2] * ws[idx[q + 2]]
        d3 = val[q + 3] * ws[idx[q + 3]]
        for k in range(size):
            o[k] = o[k] + d0 * w0[k] + d1 * w1[k] + d2 * w2[k] + d3 * w3[k]
    elif cnt == 3:
        w1 = w[idx[q + 1], lo:hi]
        w2 = w[idx[q + 2], lo:hi]
        d1 = val[q + 1] * ws[idx[q + 1]]
        d2 = val[q + 2] * ws[idx[q + 2]]
        for k in range(size):
            o[k] = o[k] + d0 * w0[k] + d1 * w1[k] + d2 * w2[k]
    elif cnt == 2:
        w1 = w[idx[q + 1], lo:hi]
        d1 = val[q + 1] * ws[idx[q + 1]]
        for k in range(size):
            o[k] = o[k] + d0 * w0[k] + d1 * w1[k]
    else:
        for k in range(size):
            o[k] = o[k] + d0 * w0[k]


@njit(**_TINY)
def _accumulate(w, ws, idx, val, n, m, split, shift):
    """``m[k'] += sum_q val[q] * ws[j] * w[j, k]`` (j = idx[q]) over a row k of ``w``; k' = k
    below ``split``, k + ``shift`` from there (the GRU's hidden columns skip M_xn).

    ``ws`` holds per-column weight scales (ones for float weights, see ``pack_int8``). Each
    column is read front to back, one sequential stream per column for the prefetcher.
    """
    rows = w.shape[1]
    low = m[0:split]
    high = m[split + shift : rows + shift]
    q = 0
    while q < n:
        cnt = min(4, n - q)
        _pass(low, w, ws, idx, val, q, cnt, 0, split)
        if split < rows:
            _pass(high, w, ws, idx, val, q, cnt, split, rows)
        q += cnt


@njit(**_INLINE)
def _count_union(idx, n, seen, stamp):
    """How many of the n listed columns were not yet seen at this ``stamp`` (marks them seen)."""
    new = 0
    for q in range(n):
        j = idx[q]
        if seen[j] != stamp:
            seen[j] = stamp
            new += 1
    return new


@njit(**_TINY)
def _abs_sum(val, n):
    total = 0.0
    for q in range(n):
        total += abs(val[q])
    return total


@njit(**_INLINE)
def _gru_gates(m, h, out, hidden, fast):
    """r, z, n from the memory ``[M_r | M_z | M_xn | M_hn]``; h <- (1 - z) n + z h in place and
    in ``out``."""
    if fast:
        one = np.float32(1.0)  # an int 1 would promote the whole expression to float64
        for k in range(hidden):
            r = _sigmoid_f32(m[k])
            z = _sigmoid_f32(m[hidden + k])
            n = _tanh_f32(m[2 * hidden + k] + r * m[3 * hidden + k])
            hk = (one - z) * n + z * h[k]
            h[k] = hk
            out[k] = hk
    else:
        for k in range(hidden):
            r = _sigmoid(m[k])
            z = _sigmoid(m[hidden + k])
            n = np.tanh(m[2 * hidden + k] + r * m[3 * hidden + k])
            hk = (1 - z) * n + z * h[k]
            h[k] = hk
            out[k] = hk


@njit(**_INLINE)
def _lstm_gates(m, h, c, out, hidden, fast):
    """i, f, g, o from the memory ``[M_i | M_f | M_g | M_o]``; c and h updated in place, h also
    written to ``out``."""
    if fast:
        for k in range(hidden):
            i = _sigmoid_f32(m[k])
            f = _sigmoid_f32(m[hidden + k])
            g = _tanh_f32(m[2 * hidden + k])
            o = _sigmoid_f32(m[3 * hidden + k])
            ck = f * c[k] + i * g
            hk = o * _tanh_f32(ck)
            c[k] = ck
            h[k] = hk
            out[k] = hk
    else:
        for k in range(hidden):
            i = _sigmoid(m[k])
            f = _sigmoid(m[hidden + k])
            g = np.tanh(m[2 * hidden + k])
            o = _sigmoid(m[3 * hidden + k])
            ck = f * c[k] + i * g
            hk = o * np.tanh(ck)
            c[k] = ck
            h[k] = hk
            out[k] = hk


@njit(**_INLINE)
def _encode_inputs(
    x, t0, steps, x_hat, theta_x, idx, val, sent, nx, ux, ax, seen_x, mask, stamp, count
):
    """Delta-encode the inputs of steps [t0, t0 + steps) of every sample; x_hat in place.

    The input deltas do not depend on the recurrence, so a chunk of steps is encoded up front and
    its input-side products are formed together (:func:`_input_products`). Row (t, b) lists its
    sent columns in ``idx[t, b, :sent[t, b]]`` (ascending) and the deltas in ``val``.
    """
    batch = x.shape[1]
    for t in range(steps):
        if count:
            ux[t0 + t] = 0
        for b in range(batch):
            n = _encode(x[t0 + t, b], x_hat[b], theta_x, idx[t, b], val[t, b], mask)
            sent[t, b] = n
            if count:
                nx[t0 + t, b] = n
                ax[t0 + t, b] = _abs_sum(val[t, b], n)
                ux[t0 + t] += _count_union(idx[t, b], n, seen_x, t0 + t + stamp)


@njit(**_TINY)
def _total(sent, steps):
    """Sent input columns over the first ``steps`` rows of a chunk, all samples."""
    total = 0
    for t in range(steps):
        for b in range(sent.shape[1]):
            total += sent[t, b]
    return total


@njit(**_INLINE)
def _input_products(w, ws, idx, val, sent, steps, cursor, block, gx):
    """``gx[t, b] = sum over sent j of val * ws[j] * w[j]`` for the rows of a chunk, by blocks.

    The weight columns are taken ``block`` at a time and every step of the chunk is updated
    from a block before the next is read: each weight is fetched from memory at most once per
    chunk instead of once per step (as ``torch.nn.GRU`` does with its input GEMM). Only the
    (step, column) pairs that were sent are multiplied. (Tiling the rows of the product too, so
    that a tile and the chunk's slice of ``gx`` stay in L2, measured slower: more, shorter passes.)
    """
    batch = gx.shape[1]
    columns = w.shape[0]
    rows = w.shape[1]
    total = _total(sent, steps)
    for t in range(steps):
        for b in range(batch):
            cursor[t, b] = 0
            row = gx[t, b]
            for k in range(rows):
                row[k] = 0
    # At low occupancy, widen the block so that a step still meets about 16 sent columns per
    # block (four passes of four columns over its row of gx) rather than one or two.
    if total > 0:
        block = max(block, (16 * steps * batch * columns) // total)
    for j0 in range(0, columns, block):
        j1 = j0 + block
        for t in range(steps):
            for b in range(batch):
                q0 = cursor[t, b]
                q1 = q0
                n = sent[t, b]
                ids = idx[t, b]
                while q1 < n and ids[q1] < j1:
                    q1 += 1
                if q1 > q0:
                    _accumulate(w, ws, ids[q0:q1], val[t, b, q0:q1], q1 - q0, gx[t, b], rows, 0)
                    cursor[t, b] = q1


@njit(**_INLINE)
def _nonzero(v, idx, val):
    """List the non-zero entries of v (NaN included) in ``idx``/``val``; returns how many."""
    n = 0
    for j in range(v.shape[0]):
        idx[n] = j
        val[n] = v[j]
        n += v[j] != 0
    return n


@njit(**_TINY)
def _bounded(m, bound):
    """Whether every element of m is finite and at most ``bound`` in magnitude."""
    ok = True
    for k in range(m.shape[0]):
        ok &= abs(m[k]) <= bound
    return ok


@njit(**_INLINE)
def _held(x, t0, t, b, x_hat0, idx, sent, x_now):
    """x̂ of sample b after chunk step t, into ``x_now``: x̂ at the chunk's start (``x_hat0``)
    with the values sent at chunk steps 0..t written over it."""
    for j in range(x_now.shape[0]):
        x_now[j] = x_hat0[j]
    for s in range(t + 1):
        ids = idx[s, b]
        xs = x[t0 + s, b]
        for q in range(sent[s, b]):
            x_now[ids[q]] = xs[ids[q]]


@njit(**_INLINE)
def _sequence(
    x, weights, theta_x, theta_h, h, c, x_hat, h_hat, m, m0, since, out, work, counts, stamp,
    count, fast, resync_every, lstm,
):  # fmt: skip
    """One delta layer over x (T, B, I); the state arrays h, c, x_hat, h_hat (B, *), m (B, 4H)
    and since (B,) are advanced in place. ``lstm`` is a compile-time constant (see
    :func:`gru_sequence`, :func:`lstm_sequence`): it picks the gate math and which memory columns
    the hidden side feeds.

    Per chunk of steps: encode the inputs and form their products (see
    :func:`_input_products`). Then per step and sample: encode h_{t-1} against h_hat; re-sync the
    memory densely (the rule of :mod:`deltarnn.functional.state`: the memory before the step is
    not within ``bound``, or the sample's step count since the last re-sync reaches
    ``resync_every``) or add the sent columns of ``wx`` and ``wh``; apply the gates.

    Args:
        weights: ``(wx (I, G*H), sx (I,), wh (H, G*H), sh (H,))``, one row per column, scales.
        c: the LSTM cell state; ignored by the GRU (any array of the right type).
        m0: (4H,) the memory the biases start it at (the re-sync starts from it).
        since: (B,) int64 steps since each sample's last re-sync (kept when ``resync_every``).
        out: (T, B, H) outputs.
        work: ``(idx_x (C, B, I), val_x (C, B, I), sent (C, B), cursor (C, B), gx (C, B, G*H),
            idx_h (H,), val_h (H,), seen_x (I,), seen_h (H,), mask (uint8, max(I, H) rounded up
            to 8), block, lean, bound, idx_d, val_d (max(I, H),), x_now (I,), x_hat0 (B, I))``:
            buffers for chunks of C steps, the column block size of the input products, the
            input occupancy below which a chunk's input columns are added at each step rather
            than batched, MEMORY_BOUND, and buffers of the re-sync.
        counts: ``(nx (T, B), nh (T, B), ux (T,), uh (T,))`` int64 and ``(abs_x (T, B), abs_h
            (T, B))`` (sums of |delta|), written when ``count``. ``seen_*`` must not hold values
            at or above ``stamp``, which numbers the steps (t + stamp) for the batch-union counts.
        fast: float32 gate approximations (see ``_tanh_f32``); exact ``np.tanh``/``np.exp`` else.
        resync_every: period of the dense re-sync (0: only the bound rule; ``since`` unused).
    """
    wx, sx, wh, sh = weights
    (idx_x, val_x, sent, cursor, gx, idx_h, val_h, seen_x, seen_h, mask, block, lean, bound,
     idx_d, val_d, x_now, x_hat0) = work  # fmt: skip
    nx, nh, ux, uh, ax, ah = counts
    steps, batch = x.shape[0], x.shape[1]
    chunk = gx.shape[0]
    hidden = h.shape[1]
    rows = wx.shape[1]  # G*H: every input column feeds every gate
    # Hidden columns: the LSTM's feed all four memories; the GRU's feed [M_r | M_z] and M_hn,
    # skipping M_xn (the reset gate keeps the input and hidden parts of n apart).
    split_h = rows if lstm else 2 * hidden
    shift_h = 0 if lstm else hidden
    periodic = resync_every > 0
    for t0 in range(0, steps, chunk):
        tc = min(chunk, steps - t0)
        if tc > 1:  # the re-sync of a step inside the chunk rebuilds its x̂ from here
            for b in range(batch):
                x_hat0[b, :] = x_hat[b, :]
        _encode_inputs(
            x, t0, tc, x_hat, theta_x, idx_x, val_x, sent, nx, ux, ax, seen_x, mask, stamp, count
        )
        # Below ``lean`` input occupancy, batching the chunk's products saves few weight bytes
        # (each column is used by few steps) and costs a pass over gx per block: add the sent
        # columns straight into the memory at each step instead. So does a chunk of one row
        # (a frame of one sample), whose columns are each used once anyway.
        direct = tc * batch == 1 or _total(sent, tc) < lean * tc * batch * wx.shape[0]
        if not direct:
            _input_products(wx, sx, idx_x, val_x, sent, tc, cursor, block, gx)
        for t in range(tc):
            if count:
                uh[t0 + t] = 0
            for b in range(batch):
                mb = m[b]
                n_h = _encode(h[b], h_hat[b], theta_h, idx_h, val_h, mask)
                resync = not _bounded(mb, bound)
                age = since[b] + 1
                if periodic and age >= resync_every:
                    resync = True
                if resync:
                    age = 0
                    held = x_hat[b]
                    if t < tc - 1:
                        _held(x, t0, t, b, x_hat0[b], idx_x, sent, x_now)
                        held = x_now
                    for k in range(mb.shape[0]):
                        mb[k] = m0[k]
                    n_d = _nonzero(held, idx_d, val_d)
                    _accumulate(wx, sx, idx_d, val_d, n_d, mb, rows, 0)
                    n_d = _nonzero(h_hat[b], idx_d, val_d)
                    _accumulate(wh, sh, idx_d, val_d, n_d, mb, split_h, shift_h)
                else:
                    if direct:
                        _accumulate(wx, sx, idx_x[t, b], val_x[t, b], sent[t, b], mb, rows, 0)
                    else:
                        g = gx[t, b]
                        for k in range(rows):
                            mb[k] += g[k]
                    _accumulate(wh, sh, idx_h, val_h, n_h, mb, split_h, shift_h)
                if periodic:
                    since[b] = age
                if lstm:
                    _lstm_gates(mb, h[b], c[b], out[t0 + t, b], hidden, fast)
                else:
                    _gru_gates(mb, h[b], out[t0 + t, b], hidden, fast)
                if count:
                    nh[t0 + t, b] = n_h
                    ah[t0 + t, b] = _abs_sum(val_h, n_h)
                    uh[t0 + t] += _count_union(idx_h, n_h, seen_h, t0 + t + stamp)


@njit(**_JIT)
def gru_sequence(
    x, weights, theta_x, theta_h, h, c, x_hat, h_hat, m, m0, since, out, work, counts, stamp,
    count, fast, resync_every,
):  # fmt: skip
    """Delta GRU over x (T, B, I): :func:`_sequence` with the GRU's gates (``c`` is ignored)."""
    _sequence(
        x, weights, theta_x, theta_h, h, c, x_hat, h_hat, m, m0, since, out, work, counts, stamp,
        count, fast, resync_every, False,
    )  # fmt: skip


@njit(**_JIT)
def lstm_sequence(
    x, weights, theta_x, theta_h, h, c, x_hat, h_hat, m, m0, since, out, work, counts, stamp,
    count, fast, resync_every,
):  # fmt: skip
    """Delta LSTM over x (T, B, I), with the cell state c (B, H): :func:`_sequence`."""
    _sequence(
        x, weights, theta_x, theta_h, h, c, x_hat, h_hat, m, m0, since, out, work, counts, stamp,
        count, fast, resync_every, True,
    )  # fmt: skip


# -- the stack streamer: every layer of a stack, one frame, one call ----------------------------
#
# The stack streamer (``cpu_stream.StackStreamer``) keeps every array of every layer in two
# flat buffers: ``fbuf`` (the compute dtype: state, thresholds, scales, outputs, work) and
# ``ibuf`` (int64: step counters, sent-column lists, counts). Row k of ``layout``
# (L, LAYOUT_FIELDS) int64 gives layer k's sizes and where each of its arrays starts (an (B, n)
# array is stored row after row); its W_X and W_H hold the addresses of the layer's packed
# weights (``CPUPacked.wx``/``wh``, C-contiguous, read in place, so that a streamer can share
# them with the module's own packed copy), whose dtype (float or int8) is ``wbuf``'s. Numba's dispatcher unboxes every
# array argument of every call (about 50 ns each), and a reshaped view costs about 20 ns: the
# sequence kernel's dozens of arrays per layer would cost more than a sparse step's work. So the
# step passes a handful of buffers, and the frame and the output by address.
#
# Inside, every array is a *bare* view (``carray`` of an address: no reference count). A view
# of an array argument carries its reference count, and numba adjusts it atomically for every
# slice, reshape and call that holds the view: measured 1.5 us a layer of a 2-layer
# H = 128 step, more than its arithmetic. A reshape also calls a C helper (40 ns) that a view
# made with its shape does not. The caller keeps the memory alive for the call.
(
    L_INPUTS, L_HIDDEN, L_BLOCK,
    F_H, F_C, F_XHAT, F_HHAT, F_M, F_M0, F_THETA_X, F_THETA_H, F_SX, F_SH, F_OUT, F_VAL,
    F_VAL_X, F_GX, F_ABS_X, F_ABS_H,
    I_SINCE, I_IDX, I_IDX_X, I_SENT, I_CURSOR, I_SEEN_X, I_SEEN_H, I_MASK, I_NX, I_NH, I_UX,
    I_UH,
    W_X, W_H,
    LAYOUT_FIELDS,
) = range(34)  # fmt: skip


@intrinsic
def _address(typingctx, address):
    """The integer ``address`` as a pointer, for ``carray``."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@njit(**_TINY)
def _view(buf, start, shape):
    """The bare C-ordered array of ``shape`` stored in ``buf`` from element ``start``."""
    return carray(_address(buf.ctypes.data + start * buf.itemsize), shape, buf.dtype)


@njit(**_TINY)
def _row(buf, start, b, n):
    """Row b of the (B, n) array stored at ``start``."""
    return _view(buf, start + b * n, (n,))


@njit(**_INLINE)
def _layer_step(x, y, fbuf, ibuf, wbuf, row, stamp, count, fast, resync_every, lean, bound, lstm):
    """One delta layer over one frame of every sample: x (B*I,) in, y (B*H,) out, the state in
    the flat buffers advanced in place.

    The steps of :func:`_sequence` at T = 1, from the same pieces and in the same order, so
    that the sums are rounded alike and a streamed frame equals a call of the sequence kernel
    bit for bit: encode every sample's input and, unless few inputs moved, form the input
    products (:func:`_input_products`); then per sample encode h_{t-1} against ĥ, and either
    re-sync the memory (the rule of :mod:`deltarnn.functional.state`, on the memory before the
    step) or add the sent columns; then the gates. Only the arrays the shared pieces index in
    2-D or 3-D have their shape; the rest are 1-D rows.
    """
    inputs, hidden = row[L_INPUTS], row[L_HIDDEN]
    batch = x.shape[0] // inputs
    rows = (4 if lstm else 3) * hidden
    widest = max(inputs, hidden)
    wx = carray(_address(row[W_X]), (inputs, rows), wbuf.dtype)
    wh = carray(_address(row[W_H]), (hidden, rows), wbuf.dtype)
    sx, sh = _row(fbuf, row[F_SX], 0, inputs), _row(fbuf, row[F_SH], 0, hidden)
    theta_x, theta_h = _row(fbuf, row[F_THETA_X], 0, inputs), _row(fbuf, row[F_THETA_H], 0, hidden)
    m0 = _row(fbuf, row[F_M0], 0, 4 * hidden)
    idx, val = _row(ibuf, row[I_IDX], 0, widest), _row(fbuf, row[F_VAL], 0, widest)
    mask = _row(ibuf, row[I_MASK], 0, (widest + 7) // 8).view(np.uint8)
    seen_h = _row(ibuf, row[I_SEEN_H], 0, hidden)
    idx_x = _view(ibuf, row[I_IDX_X], (1, batch, inputs))
    val_x = _view(fbuf, row[F_VAL_X], (1, batch, inputs))
    sent = _view(ibuf, row[I_SENT], (1, batch))
    _encode_inputs(
        _view(x, 0, (1, batch, inputs)), 0, 1, _view(fbuf, row[F_XHAT], (batch, inputs)),
        theta_x, idx_x, val_x, sent, _view(ibuf, row[I_NX], (1, batch)),
        _row(ibuf, row[I_UX], 0, 1), _view(fbuf, row[F_ABS_X], (1, batch)),
        _row(ibuf, row[I_SEEN_X], 0, inputs), mask, stamp, count,
    )  # fmt: skip
    direct = batch == 1 or _total(sent, 1) < lean * batch * inputs  # as in _sequence
    gx = _view(fbuf, row[F_GX], (1, batch, rows))
    if not direct:
        cursor = _view(ibuf, row[I_CURSOR], (1, batch))
        _input_products(wx, sx, idx_x, val_x, sent, 1, cursor, row[L_BLOCK], gx)
    # as in _sequence: the GRU's hidden columns skip M_xn
    split_h = rows if lstm else 2 * hidden
    shift_h = 0 if lstm else hidden
    periodic = resync_every > 0
    if count:
        ibuf[row[I_UH]] = 0
    for b in range(batch):
        x_hat = _row(fbuf, row[F_XHAT], b, inputs)
        h = _row(fbuf, row[F_H], b, hidden)
        h_hat = _row(fbuf, row[F_HHAT], b, hidden)
        m = _row(fbuf, row[F_M], b, 4 * hidden)
        n_h = _encode(h, h_hat, theta_h, idx, val, mask)
        if count:  # now: the re-sync below reuses idx and val
            ibuf[row[I_NH] + b] = n_h
            fbuf[row[F_ABS_H] + b] = _abs_sum(val, n_h)
            ibuf[row[I_UH]] += _count_union(idx, n_h, seen_h, stamp)
        resync = not _bounded(m, bound)
        age = ibuf[row[I_SINCE] + b] + 1
        if periodic and age >= resync_every:
            resync = True
        if resync:
            age = 0
            for k in range(m.shape[0]):
                m[k] = m0[k]
            n_d = _nonzero(x_hat, idx, val)
            _accumulate(wx, sx, idx, val, n_d, m, rows, 0)
            n_d = _nonzero(h_hat, idx, val)
            _accumulate(wh, sh, idx, val, n_d, m, split_h, shift_h)
        else:
            if direct:
                _accumulate(wx, sx, idx_x[0, b], val_x[0, b], sent[0, b], m, rows, 0)
            else:
                g = gx[0, b]
                for k in range(rows):
                    m[k] += g[k]
            _accumulate(wh, sh, idx, val, n_h, m, split_h, shift_h)
        if periodic:
            ibuf[row[I_SINCE] + b] = age
        out = _row(y, 0, b, hidden)
        if lstm:
            _lstm_gates(m, h, _row(fbuf, row[F_C], b, hidden), out, hidden, fast)
        else:
            _gru_gates(m, h, out, hidden, fast)


@njit(**_TINY)
def _bare(a):
    """A bare view of the whole of ``a`` (see above)."""
    return _view(a, 0, a.shape)


@njit(**_INLINE)
def _stack_step(
    frame, out, batch, fbuf, ibuf, wbuf, layout, stamp, count, fast, resync_every, lean, bound,
    lstm,
):  # fmt: skip
    """Every layer of a stack over one frame (B, I) at address ``frame``, layer k reading layer
    k-1's output; the last layer writes the (B, H) array at address ``out`` (both C-ordered, of
    ``fbuf``'s dtype). ``stamp`` numbers the frame for the batch-union counts (``seen_*`` must
    hold no value at or above it)."""
    fbuf, ibuf, wbuf, layout = _bare(fbuf), _bare(ibuf), _bare(wbuf), _bare(layout)
    layers = layout.shape[0]
    x = carray(_address(frame), (batch * layout[0, L_INPUTS],), fbuf.dtype)
    for k in range(layers):
        row = layout[k]
        if k == layers - 1:
            y = carray(_address(out), (batch * row[L_HIDDEN],), fbuf.dtype)
        else:
            y = _row(fbuf, row[F_OUT], 0, batch * row[L_HIDDEN])
        _layer_step(
            x, y, fbuf, ibuf, wbuf, row, stamp, count, fast, resync_every, lean, bound, lstm
        )  # fmt: skip
        x = y


@njit(**_JIT)
def gru_stack_step(
    frame, out, batch, fbuf, ibuf, wbuf, layout, stamp, count, fast, resync_every, lean, bound
):  # fmt: skip
    """A stack of delta GRU layers over one frame: :func:`_stack_step`."""
    _stack_step(
        frame, out, batch, fbuf, ibuf, wbuf, layout, stamp, count, fast, resync_every, lean,
        bound, False,
    )  # fmt: skip


@njit(**_JIT)
def lstm_stack_step(
    frame, out, batch, fbuf, ibuf, wbuf, layout, stamp, count, fast, resync_every, lean, bound
):  # fmt: skip
    """A stack of delta LSTM layers over one frame: :func:`_stack_step`."""
    _stack_step(
        frame, out, batch, fbuf, ibuf, wbuf, layout, stamp, count, fast, resync_every, lean,
        bound, True,
    )  # fmt: skip
