"""Triton kernels of the ``triton`` backend (inference) and of the fast delta training path.

Every kernel has a pure-PyTorch twin it is tested against: the functional spec
(:mod:`deltarnn.functional`) for inference, and the ``*_ref`` functions of
:mod:`deltarnn.ops.triton_train` for training. Load it through :func:`deltarnn.ops.triton.kernels`,
which checks that it was built in the same mode (compiled or interpreted) as Triton itself.

Shape legend: B batch, I input features, H hidden units, G gates (3 GRU, 4 LSTM).

Layouts:

* weights for inference are packed transposed, ``W^T`` of shape (I, G*H) and (H, G*H), so that
  the weights of one input column j (what a delta of feature j multiplies) are one contiguous row;
  a step reads only the rows of the columns that sent a delta.
* the memory ``m`` is (B, 4H): ``[M_r | M_z | M_xn | M_hn]`` (GRU) or ``[M_i | M_f | M_g | M_o]``
  (LSTM), as in :class:`deltarnn.functional.DeltaGRUState`.

Pointers that receive per-step views (``x[t]``, ``out[t]``, the slots of a ring buffer) are listed
in ``do_not_specialize_on_alignment``: whether such a view is 16-byte aligned depends on t and on
the shape, and Triton would otherwise compile a variant per combination (hundreds per test run,
minutes of cold compilation). Weights and whole buffers keep the alignment specialisation.
"""

from __future__ import annotations

import triton
import triton.language as tl

# What @triton.jit saw when this module was imported: interpreter (True) or compiler.
INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # Triton has no tanh in tl; 2*sigmoid(2x) - 1 is exact up to rounding of the order of eps.
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _sends(diff, theta):
    """The send rule of the spec: ``not |diff| <= theta``, so a NaN change is sent (a comparison
    with NaN is false) and NaN/inf reach the products as in a dense network."""
    return ~(tl.abs(diff) <= theta)


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """acc += a @ b in acc's dtype. ``out_dtype`` must be given: Triton 3.6 rejects an fp64
    accumulator with the default (fp32) ``out_dtype``."""
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=acc.dtype)


@triton.jit
def _mac(acc, d, w, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """acc (BB, BH) += d (BB, BK) @ w (BK, BH).

    ``tl.dot`` needs BB >= 16 on a GPU; a batch of 1-4 rows uses a broadcast multiply-reduce.
    """
    if USE_DOT:
        acc = _dot(d, w, acc, PRECISION)
    else:
        acc += tl.sum(d[:, :, None] * w[None, :, :], axis=1)
    return acc


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize_on_alignment=["x_ptr"], do_not_specialize=["T"])
def delta_scan_kernel(
    x_ptr,
    xhat_ptr,
    theta_ptr,
    delta_ptr,
    last_ptr,
    held_ptr,
    T,
    N,
    F,
    STORE_DELTA: tl.constexpr,
    STORE_LAST: tl.constexpr,
    STORE_HELD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Delta-encode a whole sequence (T, B, F) against x̂, one program per block of B*F entries.

    Writes the deltas (T, B, F) and/or, for training, the index of the last step that sent each
    entry (``t + 1``, or 0 when it still holds the initial x̂), and/or the x̂ held after each step
    (T, B, F; what the memory re-sync of a step multiplies), and the final x̂ in place.
    Arithmetic is in x̂'s dtype.
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    theta = tl.load(theta_ptr + offs % F, mask=mask, other=0.0)
    xhat = tl.load(xhat_ptr + offs, mask=mask, other=0.0)
    last = tl.zeros([BLOCK], dtype=tl.int64)
    # Advance the pointers by one step at a time: 64-bit pointer arithmetic, no t*N overflow.
    x_ptr += offs
    delta_ptr += offs
    last_ptr += offs
    held_ptr += offs
    for t in range(T):
        x = tl.load(x_ptr, mask=mask, other=0.0).to(xhat.dtype)
        diff = x - xhat
        send = _sends(diff, theta)
        if STORE_DELTA:
            tl.store(delta_ptr, tl.where(send, diff, 0.0), mask=mask)
        xhat = tl.where(send, x, xhat)
        if STORE_LAST:
            last = tl.where(send, t + 1, last)
            tl.store(last_ptr, last, mask=mask)
        if STORE_HELD:
            tl.store(held_ptr, xhat, mask=mask)
        x_ptr += N
        delta_ptr += N
        last_ptr += N
        held_ptr += N
    tl.store(xhat_ptr + offs, xhat, mask=mask)


@triton.jit(do_not_specialize_on_alignment=["vhat_in_ptr", "vhat_out_ptr", "delta_ptr"])
def encode_kernel(
    v_ptr,
    vhat_in_ptr,
    vhat_out_ptr,
    theta_ptr,
    delta_ptr,
    flags_ptr,
    B,
    F,
    BLOCK_B: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """Delta-encode one (B, F) vector; each program owns a block of features and every batch row.

    Writes the delta, the new x̂ (to ``vhat_out``, which may alias ``vhat_in``) and a flag per
    feature: 1 when any row of the batch sent it (the column the batched product must read).
    """
    cols = tl.program_id(0) * BLOCK_F + tl.arange(0, BLOCK_F)
    cmask = cols < F
    theta = tl.load(theta_ptr + cols, mask=cmask, other=0.0)
    any_sent = tl.zeros([BLOCK_F], dtype=tl.int32)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B)
        m2 = (rows < B)[:, None] & cmask[None, :]
        off = rows[:, None] * F + cols[None, :]
        v = tl.load(v_ptr + off, mask=m2, other=0.0)
        vhat = tl.load(vhat_in_ptr + off, mask=m2, other=0.0)
        diff = v - vhat
        send = _sends(diff, theta[None, :]) & m2
        tl.store(delta_ptr + off, tl.where(send, diff, 0.0), mask=m2)
        tl.store(vhat_out_ptr + off, tl.where(send, v, vhat), mask=m2)
        any_sent = tl.maximum(any_sent, tl.max(send.to(tl.int32), axis=0))
    tl.store(flags_ptr + cols, any_sent, mask=cmask)


@triton.jit
def _compact(flags, cols, cmask, idx_ptr, base):
    """Append the columns whose flag is set to ``idx`` at ``base``; return the new length."""
    sent = (flags != 0) & cmask
    pos = base + tl.cumsum(sent.to(tl.int32), axis=0) - 1
    tl.store(idx_ptr + pos, cols, mask=sent)
    return base + tl.sum(sent.to(tl.int32), axis=0)


@triton.jit
def _compact_flags(flags_ptr, idx_ptr, F, CLEAR: tl.constexpr, BLOCK_C: tl.constexpr):
    """The columns of the F flags that are set, listed at ``idx``; returns their number. With
    ``CLEAR`` the flags are reset to 0 as they are read."""
    n = tl.sum(tl.zeros([BLOCK_C], dtype=tl.int32), axis=0)
    for c0 in range(0, F, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < F
        flags = tl.load(flags_ptr + cols, mask=cmask, other=0)
        n = _compact(flags, cols, cmask, idx_ptr, n)
        if CLEAR:
            tl.store(flags_ptr + cols, tl.zeros([BLOCK_C], dtype=tl.int32), mask=cmask)
    return n


@triton.jit(do_not_specialize_on_alignment=["x_ptr", "dx_ptr"])
def prepare_step_kernel(
    x_ptr,
    xhat_ptr,
    theta_x_ptr,
    dx_ptr,
    idx_x_ptr,
    flags_h_ptr,
    idx_h_ptr,
    n_ptr,
    bound_clear_ptr,
    B,
    I,
    H,
    ENCODE_X: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """First kernel of a step (one program): the lists of active columns.

    With ``ENCODE_X`` it delta-encodes the input x (B, I) against x̂ (deltas to ``dx``, x̂ in place)
    and compacts the columns any batch row sent into ``idx_x``. It always compacts the hidden
    columns flagged by the previous step into ``idx_h`` and clears those flags. The list lengths go
    to ``n = [n_x, n_h]``. A compacted list lets the product kernel loop over active columns only.
    It also clears the B out-of-bound flags at ``bound_clear``, which the step kernel after it
    sets (the streamer's two-slot ring has no third slot the step kernel could clear).
    """
    for b0 in range(0, B, BLOCK_C):
        rows = b0 + tl.arange(0, BLOCK_C)
        tl.store(bound_clear_ptr + rows, tl.zeros([BLOCK_C], dtype=tl.int32), mask=rows < B)
    n_x = tl.sum(tl.zeros([BLOCK_C], dtype=tl.int32), axis=0)
    if ENCODE_X:
        for c0 in range(0, I, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            cmask = cols < I
            theta = tl.load(theta_x_ptr + cols, mask=cmask, other=0.0)
            any_sent = tl.zeros([BLOCK_C], dtype=tl.int32)
            for b0 in range(0, B, BLOCK_B):
                rows = b0 + tl.arange(0, BLOCK_B)
                m2 = (rows < B)[:, None] & cmask[None, :]
                off = rows[:, None] * I + cols[None, :]
                x = tl.load(x_ptr + off, mask=m2, other=0.0).to(tl.float32)
                xhat = tl.load(xhat_ptr + off, mask=m2, other=0.0)
                diff = x - xhat
                send = _sends(diff, theta[None, :]) & m2
                tl.store(dx_ptr + off, tl.where(send, diff, 0.0), mask=m2)
                tl.store(xhat_ptr + off, tl.where(send, x, xhat), mask=m2)
                any_sent = tl.maximum(any_sent, tl.max(send.to(tl.int32), axis=0))
            n_x = _compact(any_sent, cols, cmask, idx_x_ptr, n_x)
    n_h = _compact_flags(flags_h_ptr, idx_h_ptr, H, True, BLOCK_C)
    tl.store(n_ptr, n_x)
    tl.store(n_ptr + 1, n_h)


@triton.jit
def _add_columns(
    acc0,
    acc1,
    acc2,
    acc3,
    wt_ptr,
    d_ptr,
    cols,
    kmask,
    rows,
    bmask,
    units,
    umask,
    F,
    H,
    HIDDEN_SIDE: tl.constexpr,
    LSTM: tl.constexpr,
    USE_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Add ``d[:, j] * W[:, j]`` for the block of columns ``cols`` (``kmask``: which are real).

    ``wt_ptr`` is W^T (F, G*H), ``d_ptr`` a (B, F) vector; only the rows of W^T listed are read.
    The gate blocks go to the accumulators of the memory parts they feed: LSTM i|f|g|o ->
    0|1|2|3; GRU input side r|z|n -> 0|1|2 (M_xn), hidden side r|z|n -> 0|1|3 (M_hn).
    """
    if LSTM:
        gh = 4 * H
    else:
        gh = 3 * H
    d = tl.load(
        d_ptr + rows[:, None] * F + cols[None, :],
        mask=bmask[:, None] & kmask[None, :],
        other=0.0,
    )
    wp = wt_ptr + cols[:, None] * gh + units[None, :]
    wm = kmask[:, None] & umask[None, :]
    acc0 = _mac(acc0, d, tl.load(wp, mask=wm, other=0.0).to(tl.float32), USE_DOT, PRECISION)
    acc1 = _mac(acc1, d, tl.load(wp + H, mask=wm, other=0.0).to(tl.float32), USE_DOT, PRECISION)
    w2 = tl.load(wp + 2 * H, mask=wm, other=0.0).to(tl.float32)
    if LSTM:
        acc2 = _mac(acc2, d, w2, USE_DOT, PRECISION)
        w3 = tl.load(wp + 3 * H, mask=wm, other=0.0).to(tl.float32)
        acc3 = _mac(acc3, d, w3, USE_DOT, PRECISION)
    elif HIDDEN_SIDE:
        acc3 = _mac(acc3, d, w2, USE_DOT, PRECISION)
    else:
        acc2 = _mac(acc2, d, w2, USE_DOT, PRECISION)
    return acc0, acc1, acc2, acc3


@triton.jit
def _sparse_columns(
    acc0,
    acc1,
    acc2,
    acc3,
    wt_ptr,
    d_ptr,
    idx_ptr,
    n,
    rows,
    bmask,
    units,
    umask,
    F,
    H,
    HIDDEN_SIDE: tl.constexpr,
    LSTM: tl.constexpr,
    USE_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """:func:`_add_columns` over the ``n`` active columns listed in ``idx`` (the deltas sent)."""
    for k0 in range(0, n, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        kmask = kk < n
        cols = tl.load(idx_ptr + kk, mask=kmask, other=0)
        acc0, acc1, acc2, acc3 = _add_columns(
            acc0, acc1, acc2, acc3, wt_ptr, d_ptr, cols, kmask, rows, bmask, units, umask, F, H,
            HIDDEN_SIDE, LSTM, USE_DOT, PRECISION,
        )  # fmt: skip
    return acc0, acc1, acc2, acc3


@triton.jit
def _dense_columns(
    acc0,
    acc1,
    acc2,
    acc3,
    wt_ptr,
    v_ptr,
    rows,
    bmask,
    units,
    umask,
    F,
    H,
    HIDDEN_SIDE: tl.constexpr,
    LSTM: tl.constexpr,
    USE_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """:func:`_add_columns` over all F columns of a (B, F) vector (the re-sync's W x̂, W ĥ)."""
    for k0 in range(0, F, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        acc0, acc1, acc2, acc3 = _add_columns(
            acc0, acc1, acc2, acc3, wt_ptr, v_ptr, cols, cols < F, rows, bmask, units, umask, F,
            H, HIDDEN_SIDE, LSTM, USE_DOT, PRECISION,
        )  # fmt: skip
    return acc0, acc1, acc2, acc3


@triton.jit
def _resync_rows(bound_in_ptr, since_in_ptr, since_out_ptr, rows, bmask, resync_every):
    """Which batch rows re-sync their memory at this step (the rule of
    :mod:`deltarnn.functional.state`): the memory before the step was out of bound (a flag the
    previous step set, or the initial check) or, with a period, ``since_sync + 1`` reaches it.
    The programs of the first unit block write the new ``since_sync`` (0 where re-synced)."""
    resync = (tl.load(bound_in_ptr + rows, mask=bmask, other=0) != 0) & bmask
    if resync_every > 0:
        age = tl.load(since_in_ptr + rows, mask=bmask, other=0) + 1
        resync = resync | ((age >= resync_every) & bmask)
        tl.store(since_out_ptr + rows, tl.where(resync, 0, age), mask=_first_block(bmask))
    return resync


@triton.jit
def _first_block(bmask):
    """``bmask`` in the programs of the first unit block, all False elsewhere: per-row values
    that every unit block computes alike are written once."""
    return bmask & ((tl.zeros(bmask.shape, dtype=tl.int32) + tl.program_id(0)) == 0)


@triton.jit(
    do_not_specialize_on_alignment=[
        "dx_ptr",
        "gx_ptr",
        "dh_ptr",
        "ghh_ptr",
        "out_ptr",
        "hhat_in_ptr",
        "hhat_out_ptr",
        "dh_next_ptr",
        "flags_h_ptr",
        "flags_in_ptr",
        "flags_clear_ptr",
        "xheld_ptr",
        "bound_in_ptr",
        "bound_out_ptr",
        "bound_clear_ptr",
        "since_in_ptr",
        "since_out_ptr",
    ],
    # runtime values: one variant, not one per value
    do_not_specialize=["encode_next", "resync_every"],
)
def delta_step_kernel(
    wih_t_ptr,
    dx_ptr,
    idx_x_ptr,
    gx_ptr,
    whh_t_ptr,
    dh_ptr,
    ghh_ptr,
    idx_h_ptr,
    n_ptr,
    m_ptr,
    h_ptr,
    c_ptr,
    out_ptr,
    hhat_in_ptr,
    hhat_out_ptr,
    theta_h_ptr,
    dh_next_ptr,
    flags_h_ptr,
    flags_in_ptr,
    flags_clear_ptr,
    xheld_ptr,
    m0_ptr,
    bound_in_ptr,
    bound_out_ptr,
    bound_clear_ptr,
    since_in_ptr,
    since_out_ptr,
    B,
    I,
    H,
    encode_next,
    resync_every,
    BOUND: tl.constexpr,
    LSTM: tl.constexpr,
    X_SPARSE: tl.constexpr,
    H_SPARSE: tl.constexpr,
    COMPACT_H: tl.constexpr,
    STORE_OUT: tl.constexpr,
    USE_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Second kernel of a step: sparse products, memory update, gates, and the next Δh.

    Program (p, q) owns hidden units ``[p*BLOCK_H, (p+1)*BLOCK_H)`` of every gate and batch rows
    ``[q*BLOCK_B, ...)``. It adds the input side (the sparse product over ``idx_x``, or the
    precomputed ``gx`` row of the dense-over-time product) and the hidden side (sparse over
    ``idx_h``, or with ``H_SPARSE`` off the precomputed dense product ``ghh``) to its slice of m,
    applies the gates, writes h (and c), then, when ``encode_next``, delta-encodes the new h for
    the next step: Δh to ``dh_next``, ĥ to ``hhat_out`` and an any-row flag per unit (atomic,
    since batch blocks share a unit; only for the sparse hidden side).

    With ``COMPACT_H`` the program builds the list of active hidden columns itself, from the
    flags of the previous step (``flags_in``), into its own slice of ``idx_h`` (one row of H per
    program), instead of reading the list a separate compaction kernel built: one kernel per
    step instead of two, and no one-program loop over H between them. The flags are a ring of
    three: read ``flags_in``, set ``flags_h`` (the next step's), clear ``flags_clear`` (the one
    read a step ago) for this program's units.

    Memory re-sync (the rule of :mod:`deltarnn.functional.state`): a row whose flag in
    ``bound_in`` is set (its memory left ``BOUND`` or stopped being finite at the previous step)
    or whose period ``resync_every`` elapses (``since_in`` -> ``since_out``) gets its memory
    recomputed densely, ``m0 + W_ih x̂_t + W_hh ĥ_t`` (x̂_t at ``xheld``, ĥ_t at ``hhat_in``), in
    place of the accumulated one; a dense product that only runs in a program holding such a row.
    Every program sets ``bound_out`` for its rows whose new memory is out of bound (the next
    step's flags) and the first unit block clears ``bound_clear`` (a ring of three, as the
    hidden flags; the streamer clears in its prepare kernel instead).
    """
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    umask = units < H
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = rows < B
    m2 = bmask[:, None] & umask[None, :]
    if LSTM:
        gh = 4 * H
    else:
        gh = 3 * H

    acc0 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    if X_SPARSE:
        n_x = tl.load(n_ptr)
        acc0, acc1, acc2, acc3 = _sparse_columns(
            acc0, acc1, acc2, acc3, wih_t_ptr, dx_ptr, idx_x_ptr, n_x, rows, bmask, units,
            umask, I, H, False, LSTM, USE_DOT, PRECISION, BLOCK_K,
        )  # fmt: skip
    else:
        gp = gx_ptr + rows[:, None] * gh + units[None, :]
        acc0 += tl.load(gp, mask=m2, other=0.0)
        acc1 += tl.load(gp + H, mask=m2, other=0.0)
        acc2 += tl.load(gp + 2 * H, mask=m2, other=0.0)
        if LSTM:
            acc3 += tl.load(gp + 3 * H, mask=m2, other=0.0)
    if H_SPARSE:
        if COMPACT_H:
            program = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
            idx_h_ptr += program.to(tl.int64) * H
            n_h = _compact_flags(flags_in_ptr, idx_h_ptr, H, False, BLOCK_C)
            tl.debug_barrier()  # the list is read back by the other threads of this program
            tl.store(flags_clear_ptr + units, tl.zeros([BLOCK_H], dtype=tl.int32), mask=umask)
        else:
            n_h = tl.load(n_ptr + 1)
        acc0, acc1, acc2, acc3 = _sparse_columns(
            acc0, acc1, acc2, acc3, whh_t_ptr, dh_ptr, idx_h_ptr, n_h, rows, bmask, units, umask,
            H, H, True, LSTM, USE_DOT, PRECISION, BLOCK_K,
        )  # fmt: skip
    else:
        # The hidden product of this step, dense (cuBLAS, launched before): Δh W_hh^T (B, G*H).
        qp = ghh_ptr + rows[:, None] * gh + units[None, :]
        acc0 += tl.load(qp, mask=m2, other=0.0)
        acc1 += tl.load(qp + H, mask=m2, other=0.0)
        if LSTM:
            acc2 += tl.load(qp + 2 * H, mask=m2, other=0.0)
            acc3 += tl.load(qp + 3 * H, mask=m2, other=0.0)
        else:
            acc3 += tl.load(qp + 2 * H, mask=m2, other=0.0)

    mp = m_ptr + rows[:, None] * (4 * H) + units[None, :]
    m0 = tl.load(mp, mask=m2, other=0.0) + acc0
    m1 = tl.load(mp + H, mask=m2, other=0.0) + acc1
    mm2 = tl.load(mp + 2 * H, mask=m2, other=0.0) + acc2
    m3 = tl.load(mp + 3 * H, mask=m2, other=0.0) + acc3

    resync = _resync_rows(bound_in_ptr, since_in_ptr, since_out_ptr, rows, bmask, resync_every)
    if tl.max(resync.to(tl.int32), axis=0) > 0:
        d0 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        d1 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        d2 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        d3 = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        d0, d1, d2, d3 = _dense_columns(
            d0, d1, d2, d3, wih_t_ptr, xheld_ptr, rows, bmask, units, umask, I, H, False, LSTM,
            USE_DOT, PRECISION, BLOCK_K,
        )  # fmt: skip
        d0, d1, d2, d3 = _dense_columns(
            d0, d1, d2, d3, whh_t_ptr, hhat_in_ptr, rows, bmask, units, umask, H, H, True, LSTM,
            USE_DOT, PRECISION, BLOCK_K,
        )  # fmt: skip
        r2 = resync[:, None]
        m0 = tl.where(r2, tl.load(m0_ptr + units, mask=umask, other=0.0)[None, :] + d0, m0)
        m1 = tl.where(r2, tl.load(m0_ptr + H + units, mask=umask, other=0.0)[None, :] + d1, m1)
        mm2 = tl.where(
            r2, tl.load(m0_ptr + 2 * H + units, mask=umask, other=0.0)[None, :] + d2, mm2
        )
        m3 = tl.where(r2, tl.load(m0_ptr + 3 * H + units, mask=umask, other=0.0)[None, :] + d3, m3)
    # The next step's flags: any element of a row's new memory not within the bound (or NaN).
    out_of_bound = ~(tl.abs(m0) <= BOUND) | ~(tl.abs(m1) <= BOUND)
    out_of_bound = out_of_bound | ~(tl.abs(mm2) <= BOUND) | ~(tl.abs(m3) <= BOUND)
    bad = tl.max((out_of_bound & m2).to(tl.int32), axis=1)
    tl.atomic_max(bound_out_ptr + rows, bad, mask=bmask & (bad > 0))
    tl.store(bound_clear_ptr + rows, tl.zeros([BLOCK_B], dtype=tl.int32), mask=_first_block(bmask))
    tl.store(mp, m0, mask=m2)
    tl.store(mp + H, m1, mask=m2)
    tl.store(mp + 2 * H, mm2, mask=m2)
    tl.store(mp + 3 * H, m3, mask=m2)

    off = rows[:, None] * H + units[None, :]
    if LSTM:
        c = _sigmoid(m1) * tl.load(c_ptr + off, mask=m2, other=0.0) + _sigmoid(m0) * _tanh(mm2)
        tl.store(c_ptr + off, c, mask=m2)
        h = _sigmoid(m3) * _tanh(c)
    else:
        r = _sigmoid(m0)
        z = _sigmoid(m1)
        n = _tanh(mm2 + r * m3)
        h = (1.0 - z) * n + z * tl.load(h_ptr + off, mask=m2, other=0.0)
    tl.store(h_ptr + off, h, mask=m2)
    if STORE_OUT:
        tl.store(out_ptr + off, h, mask=m2)

    if encode_next != 0:
        hhat = tl.load(hhat_in_ptr + off, mask=m2, other=0.0)
        theta = tl.load(theta_h_ptr + units, mask=umask, other=0.0)
        diff = h - hhat
        send = _sends(diff, theta[None, :]) & m2
        tl.store(dh_next_ptr + off, tl.where(send, diff, 0.0), mask=m2)
        tl.store(hhat_out_ptr + off, tl.where(send, h, hhat), mask=m2)
        if H_SPARSE:  # the flags feed the next step's compaction of the hidden columns
            any_sent = tl.max(send.to(tl.int32), axis=0)
            tl.atomic_max(flags_h_ptr + units, any_sent, mask=umask & (any_sent > 0))


# --------------------------------------------------------------------------------------------
# Training: the recurrence m_t = P_t + W_hh (ĥ_t - ĥ_0) with ĥ_t = delta(h_{t-1}, ĥ_{t-1}),
# forward and hand-written backward, one launch per step each way.
# --------------------------------------------------------------------------------------------


_TRAIN_FORWARD_STEP_KERNEL_VIEWS = [
    "p_ptr",
    "h_prev_ptr",
    "hhat_prev_ptr",
    "hhat0_ptr",
    "hhat_ptr",
    "send_ptr",
    "gates_ptr",
    "h_ptr",
    "c_prev_ptr",
    "c_ptr",
]


@triton.jit(do_not_specialize_on_alignment=_TRAIN_FORWARD_STEP_KERNEL_VIEWS)
def train_forward_step_kernel(
    p_ptr,
    h_prev_ptr,
    hhat_prev_ptr,
    hhat0_ptr,
    whh_t_ptr,
    theta_ptr,
    hhat_ptr,
    send_ptr,
    m_ptr,
    gates_ptr,
    h_ptr,
    c_prev_ptr,
    c_ptr,
    B,
    H,
    LSTM: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One training step, program (p, q) owning hidden units block p and batch rows block q.

    Each program re-derives ĥ_t = send ? h_{t-1} : ĥ_{t-1} on the fly for every column k of
    the product q = (ĥ_t - ĥ_0) W_hh^T (cheap element-wise work, no grid-wide sync) and writes
    ĥ_t and the send mask for its own units only. Then m = P_t + q, the gates, and h (c).
    Saved for the backward: ``gates`` = [r|z|n|M_hn] (GRU) or [i|f|g|o] (LSTM).
    Arithmetic is in P's dtype (fp32 or fp64).
    """
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    umask = units < H
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = rows < B
    m2 = bmask[:, None] & umask[None, :]
    dtype = p_ptr.dtype.element_ty
    if LSTM:
        gh = 4 * H
    else:
        gh = 3 * H

    q0 = tl.zeros([BLOCK_B, BLOCK_H], dtype=dtype)
    q1 = tl.zeros([BLOCK_B, BLOCK_H], dtype=dtype)
    q2 = tl.zeros([BLOCK_B, BLOCK_H], dtype=dtype)
    q3 = tl.zeros([BLOCK_B, BLOCK_H], dtype=dtype)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < H
        mk = bmask[:, None] & kmask[None, :]
        off = rows[:, None] * H + ks[None, :]
        hp = tl.load(h_prev_ptr + off, mask=mk, other=0.0)
        hhp = tl.load(hhat_prev_ptr + off, mask=mk, other=0.0)
        theta = tl.load(theta_ptr + ks, mask=kmask, other=0.0)
        u = tl.where(_sends(hp - hhp, theta[None, :]), hp, hhp)
        u = u - tl.load(hhat0_ptr + off, mask=mk, other=0.0)
        wp = whh_t_ptr + ks[:, None] * gh + units[None, :]
        wm = kmask[:, None] & umask[None, :]
        q0 = _dot(u, tl.load(wp, mask=wm, other=0.0), q0, PRECISION)
        q1 = _dot(u, tl.load(wp + H, mask=wm, other=0.0), q1, PRECISION)
        q2 = _dot(u, tl.load(wp + 2 * H, mask=wm, other=0.0), q2, PRECISION)
        if LSTM:
            w3 = tl.load(wp + 3 * H, mask=wm, other=0.0)
            q3 = _dot(u, w3, q3, PRECISION)

    off = rows[:, None] * H + units[None, :]
    hp = tl.load(h_prev_ptr + off, mask=m2, other=0.0)
    hhp = tl.load(hhat_prev_ptr + off, mask=m2, other=0.0)
    theta = tl.load(theta_ptr + units, mask=umask, other=0.0)
    send = _sends(hp - hhp, theta[None, :])
    tl.store(hhat_ptr + off, tl.where(send, hp, hhp), mask=m2)
    tl.store(send_ptr + off, send.to(tl.int8), mask=m2)

    o4 = rows[:, None] * (4 * H) + units[None, :]
    p0 = tl.load(p_ptr + o4, mask=m2, other=0.0)
    p1 = tl.load(p_ptr + o4 + H, mask=m2, other=0.0)
    p2 = tl.load(p_ptr + o4 + 2 * H, mask=m2, other=0.0)
    p3 = tl.load(p_ptr + o4 + 3 * H, mask=m2, other=0.0)
    if LSTM:
        a0 = p0 + q0
        a1 = p1 + q1
        a2 = p2 + q2
        a3 = p3 + q3
        gi = _sigmoid(a0)
        gf = _sigmoid(a1)
        gg = _tanh(a2)
        go = _sigmoid(a3)
        c = gf * tl.load(c_prev_ptr + off, mask=m2, other=0.0) + gi * gg
        tl.store(c_ptr + off, c, mask=m2)
        h = go * _tanh(c)
        s0, s1, s2, s3 = gi, gf, gg, go
    else:
        a0 = p0 + q0
        a1 = p1 + q1
        a2 = p2
        a3 = p3 + q2
        r = _sigmoid(a0)
        z = _sigmoid(a1)
        n = _tanh(a2 + r * a3)
        h = (1.0 - z) * n + z * hp
        s0, s1, s2, s3 = r, z, n, a3
    tl.store(m_ptr + o4, a0, mask=m2)
    tl.store(m_ptr + o4 + H, a1, mask=m2)
    tl.store(m_ptr + o4 + 2 * H, a2, mask=m2)
    tl.store(m_ptr + o4 + 3 * H, a3, mask=m2)
    tl.store(gates_ptr + o4, s0, mask=m2)
    tl.store(gates_ptr + o4 + H, s1, mask=m2)
    tl.store(gates_ptr + o4 + 2 * H, s2, mask=m2)
    tl.store(gates_ptr + o4 + 3 * H, s3, mask=m2)
    tl.store(h_ptr + off, h, mask=m2)


@triton.jit
def _gates_backward(
    gh,
    gates_ptr,
    h_prev_ptr,
    gc_ptr,
    c_ptr,
    c_prev_ptr,
    gm_ptr,
    dp_ptr,
    dq_ptr,
    gc_prev_ptr,
    rows,
    units,
    m2,
    H,
    HAS_GM: tl.constexpr,
    LSTM: tl.constexpr,
):
    """Backward through the gates of one step for the program's units.

    ``gh`` is dL/dh_t (B, BH). Writes dL/dm_t to ``dp`` (B, 4H) and the hidden-product part of it
    to ``dq`` (B, G*H): [dM_r|dM_z|dM_hn] (GRU) or dM (LSTM); for the LSTM, also dL/dc_{t-1}
    through the forget gate to ``gc_prev``. ``gm`` adds a gradient on m_t itself (final state).
    """
    o4 = rows[:, None] * (4 * H) + units[None, :]
    off = rows[:, None] * H + units[None, :]
    s0 = tl.load(gates_ptr + o4, mask=m2, other=0.0)
    s1 = tl.load(gates_ptr + o4 + H, mask=m2, other=0.0)
    s2 = tl.load(gates_ptr + o4 + 2 * H, mask=m2, other=0.0)
    s3 = tl.load(gates_ptr + o4 + 3 * H, mask=m2, other=0.0)
    if LSTM:
        tc = _tanh(tl.load(c_ptr + off, mask=m2, other=0.0))
        dc = tl.load(gc_ptr + off, mask=m2, other=0.0) + gh * s3 * (1.0 - tc * tc)
        d0 = dc * s2 * s0 * (1.0 - s0)
        d1 = dc * tl.load(c_prev_ptr + off, mask=m2, other=0.0) * s1 * (1.0 - s1)
        d2 = dc * s0 * (1.0 - s2 * s2)
        d3 = gh * tc * s3 * (1.0 - s3)
        tl.store(gc_prev_ptr + off, dc * s1, mask=m2)
    else:
        hp = tl.load(h_prev_ptr + off, mask=m2, other=0.0)
        da = gh * (1.0 - s1) * (1.0 - s2 * s2)
        d0 = da * s3 * s0 * (1.0 - s0)
        d1 = gh * (hp - s2) * s1 * (1.0 - s1)
        d2 = da
        d3 = da * s0
    if HAS_GM:
        d0 += tl.load(gm_ptr + o4, mask=m2, other=0.0)
        d1 += tl.load(gm_ptr + o4 + H, mask=m2, other=0.0)
        d2 += tl.load(gm_ptr + o4 + 2 * H, mask=m2, other=0.0)
        d3 += tl.load(gm_ptr + o4 + 3 * H, mask=m2, other=0.0)
    tl.store(dp_ptr + o4, d0, mask=m2)
    tl.store(dp_ptr + o4 + H, d1, mask=m2)
    tl.store(dp_ptr + o4 + 2 * H, d2, mask=m2)
    tl.store(dp_ptr + o4 + 3 * H, d3, mask=m2)
    if LSTM:
        oq = rows[:, None] * (4 * H) + units[None, :]
        tl.store(dq_ptr + oq + 2 * H, d2, mask=m2)
        tl.store(dq_ptr + oq + 3 * H, d3, mask=m2)
    else:
        oq = rows[:, None] * (3 * H) + units[None, :]
        tl.store(dq_ptr + oq + 2 * H, d3, mask=m2)
    tl.store(dq_ptr + oq, d0, mask=m2)
    tl.store(dq_ptr + oq + H, d1, mask=m2)


_TRAIN_BACKWARD_LAST_KERNEL_VIEWS = [
    "gout_ptr",
    "g_c_ptr",
    "g_m_ptr",
    "gates_ptr",
    "h_prev_ptr",
    "c_ptr",
    "c_prev_ptr",
    "dp_ptr",
    "dq_ptr",
    "gh_ring_ptr",
    "ghh_ring_ptr",
    "gc_prev_ptr",
]


@triton.jit(do_not_specialize_on_alignment=_TRAIN_BACKWARD_LAST_KERNEL_VIEWS)
def train_backward_last_kernel(
    gout_ptr,
    g_c_ptr,
    g_m_ptr,
    gates_ptr,
    h_prev_ptr,
    c_ptr,
    c_prev_ptr,
    dp_ptr,
    dq_ptr,
    gh_ring_ptr,
    ghh_ring_ptr,
    gc_prev_ptr,
    B,
    H,
    LSTM: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Start of the backward at the last step T-1: dL/dh = grad of output[T-1] (the final h is
    a view of it); the final c and m gradients seed their carries; the ĥ carry starts at 0 (the grad
    of the ĥ sequence, which holds the final ĥ, is added by each step). Element-wise."""
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    m2 = (rows < B)[:, None] & (units < H)[None, :]
    off = rows[:, None] * H + units[None, :]
    gh = tl.load(gout_ptr + off, mask=m2, other=0.0)
    tl.store(gh_ring_ptr + off, gh, mask=m2)
    tl.store(ghh_ring_ptr + off, tl.zeros([BLOCK_B, BLOCK_H], dtype=gh.dtype), mask=m2)
    _gates_backward(
        gh, gates_ptr, h_prev_ptr, g_c_ptr, c_ptr, c_prev_ptr, g_m_ptr, dp_ptr, dq_ptr,
        gc_prev_ptr, rows, units, m2, H, True, LSTM,
    )  # fmt: skip


_TRAIN_BACKWARD_STEP_KERNEL_VIEWS = [
    "dq_ptr",
    "gates_ptr",
    "send_ptr",
    "gh_ptr",
    "ghh_ptr",
    "ghs_ptr",
    "gh_prev_ptr",
    "ghh_prev_ptr",
    "gout_prev_ptr",
    "gates_prev_ptr",
    "h_prev2_ptr",
    "gc_prev_ptr",
    "c_prev_ptr",
    "c_prev2_ptr",
    "dp_prev_ptr",
    "dq_prev_ptr",
    "gc_prev2_ptr",
]


@triton.jit(
    do_not_specialize_on_alignment=_TRAIN_BACKWARD_STEP_KERNEL_VIEWS, do_not_specialize=["has_prev"]
)
def train_backward_step_kernel(
    dq_ptr,
    whh_ptr,
    gates_ptr,
    send_ptr,
    gh_ptr,
    ghh_ptr,
    ghs_ptr,
    gh_prev_ptr,
    ghh_prev_ptr,
    gout_prev_ptr,
    gates_prev_ptr,
    h_prev2_ptr,
    gc_prev_ptr,
    c_prev_ptr,
    c_prev2_ptr,
    dp_prev_ptr,
    dq_prev_ptr,
    gc_prev2_ptr,
    B,
    H,
    has_prev,
    LSTM: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Backward of step t for the program's units, fused with the gate backward of step t-1.

    dĥ_t = G_ĥ,t + g_ĥ,t + dq_t W_hh (dq_t over all G*H columns, written by the previous
    launch; g_ĥ,t the gradient of the ĥ sequence output);
    dL/dh_{t-1} = [z_t G_h,t (GRU)] + s_t dĥ_t + grad of output[t-1]; G_ĥ,t-1 = (1 - s_t) dĥ_t.
    Then, when ``has_prev`` (t >= 1), the gates of step t-1 are back-propagated for these units,
    which produces dq_{t-1} for the next launch. At t = 0 the carries are dL/dh0 and (part of)
    dL/dĥ0.
    """
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    umask = units < H
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = rows < B
    m2 = bmask[:, None] & umask[None, :]
    dtype = gh_ptr.dtype.element_ty
    if LSTM:
        gh_cols = 4 * H
    else:
        gh_cols = 3 * H

    acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=dtype)
    for k0 in range(0, gh_cols, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < gh_cols
        dq = tl.load(
            dq_ptr + rows[:, None] * gh_cols + ks[None, :],
            mask=bmask[:, None] & kmask[None, :],
            other=0.0,
        )
        w = tl.load(
            whh_ptr + ks[:, None] * H + units[None, :],
            mask=kmask[:, None] & umask[None, :],
            other=0.0,
        )
        acc = _dot(dq, w, acc, PRECISION)

    off = rows[:, None] * H + units[None, :]
    dhhat = tl.load(ghh_ptr + off, mask=m2, other=0.0) + tl.load(ghs_ptr + off, mask=m2, other=0.0)
    dhhat += acc
    send = tl.load(send_ptr + off, mask=m2, other=0) != 0
    g_prev = tl.where(send, dhhat, 0.0)
    if not LSTM:
        z = tl.load(gates_ptr + rows[:, None] * (4 * H) + units[None, :] + H, mask=m2, other=0.0)
        g_prev += z * tl.load(gh_ptr + off, mask=m2, other=0.0)
    tl.store(ghh_prev_ptr + off, tl.where(send, 0.0, dhhat), mask=m2)
    if has_prev != 0:
        g_prev += tl.load(gout_prev_ptr + off, mask=m2, other=0.0)
        _gates_backward(
            g_prev, gates_prev_ptr, h_prev2_ptr, gc_prev_ptr, c_prev_ptr, c_prev2_ptr, dq_ptr,
            dp_prev_ptr, dq_prev_ptr, gc_prev2_ptr, rows, units, m2, H, False, LSTM,
        )  # fmt: skip
    tl.store(gh_prev_ptr + off, g_prev, mask=m2)
