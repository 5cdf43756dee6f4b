r"""Fast delta training: delta GRU/LSTM layers with thresholds in the forward pass and a
hand-written backward, with the same results and gradients as autograd through the spec.

The spec (:func:`deltarnn.functional.delta_gru`) accumulates the memory one delta at a time. With
the send masks held constant (as the spec's gradient does), the deltas telescope exactly:

.. math::
    \sum_{\tau \le t} \Delta x_\tau = \hat{x}_t - \hat{x}_{-1}, \qquad
    M_t = M_{-1} + W_{ih} (\hat{x}_t - \hat{x}_{-1}) + W_{hh} (\hat{h}_t - \hat{h}_{-1})

(GRU: the input part feeds r|z|n_x, the hidden part r|z|n_h), as functions of the inputs, so the
values *and* the gradients agree. Hence:

* input side: the x̂ sequence is a cheap element-wise scan (which step last sent each feature),
  gathered from x so autograd routes each gradient to the frame that was sent; then **one** GEMM
  over all steps gives ``P_t = M_{-1} + W_ih (x̂_t - x̂_{-1})``;
* recurrent side: :class:`DeltaRecurrence`, ``ĥ_t = send_t ? h_{t-1} : ĥ_{t-1}``,
  ``m_t = P_t + W_hh (ĥ_t - ĥ_{-1})``, gates. On a GPU each step is **one** Triton launch forward
  and one backward (:mod:`deltarnn.ops._triton_kernels`), then one GEMM for ``dW_hh``; on a CPU
  the same algorithm runs as a torch loop (``*_ref`` functions below, also the kernels' oracle).

Shape legend: T steps, B batch, I inputs, H hidden units, G gates (3 GRU, 4 LSTM).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
from torch import Tensor
from torch.nn import functional as nnF

from ..errors import BackendError
from ..functional import DeltaCounts, DeltaGRUState, DeltaLSTMState, count_sends

IMPLS = ("auto", "torch", "triton")


# ---------------------------------------------------------------------------------------------
# Torch twins of the kernels (the CPU path, and the oracle the kernels are tested against)
# ---------------------------------------------------------------------------------------------


def send_index_ref(x: Tensor, x_hat: Tensor, theta: Tensor) -> Tensor:
    """For each step and entry, 1 + the last step <= t that sent it, or 0 (still the initial x̂).

    x: (T, B, F); x_hat: (B, F); theta: (F,). Returns (T, B, F) int64: an index into
    ``cat([x_hat[None], x])`` such that gathering it gives the x̂ sequence.
    """
    last = torch.zeros(x.shape[1:], dtype=torch.int64, device=x.device)
    out = torch.empty(x.shape, dtype=torch.int64, device=x.device)
    for t in range(x.shape[0]):
        send = ~((x[t] - x_hat).abs() <= theta)  # the spec's rule: a NaN change is sent
        x_hat = torch.where(send, x[t], x_hat)
        last = torch.where(send, t + 1, last)
        out[t] = last
    return out


def forward_step_ref(
    p: Tensor,
    h_prev: Tensor,
    hhat_prev: Tensor,
    hhat0: Tensor,
    weight_hh: Tensor,
    theta: Tensor,
    c_prev: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """One step of the recurrence (twin of ``train_forward_step_kernel``).

    Args:
        p: (B, 4H) memory without the hidden product. h_prev, hhat_prev, hhat0: (B, H).
        weight_hh: (G*H, H). theta: (H,). c_prev: (B, H) for the LSTM, else None.

    Returns:
        ``(hhat, send, m, gates, h, c)``: gates is [r|z|n|M_hn] (GRU) or [i|f|g|o] (LSTM).
    """
    send = ~((h_prev - hhat_prev).abs() <= theta)  # the spec's rule: a NaN change is sent
    hhat = torch.where(send, h_prev, hhat_prev)
    q = (hhat - hhat0) @ weight_hh.t()
    if c_prev is not None:
        m = p + q
        i, f, g, o = m.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c_prev + i * g
        return hhat, send, m, torch.cat((i, f, g, o), 1), o * torch.tanh(c), c
    q_r, q_z, q_n = q.chunk(3, dim=1)
    p_r, p_z, p_xn, p_hn = p.chunk(4, dim=1)
    m_hn = p_hn + q_n
    m = torch.cat((p_r + q_r, p_z + q_z, p_xn, m_hn), 1)
    r, z = torch.sigmoid(m[:, : p_r.shape[1]]), torch.sigmoid(p_z + q_z)
    n = torch.tanh(p_xn + r * m_hn)
    return hhat, send, m, torch.cat((r, z, n, m_hn), 1), (1 - z) * n + z * h_prev, None


def gates_backward_ref(
    gh: Tensor,
    gates: Tensor,
    h_prev: Tensor,
    gc: Tensor | None,
    c: Tensor | None,
    c_prev: Tensor | None,
    gm: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Backward through the gates of one step (twin of ``_gates_backward``).

    Args:
        gh: dL/dh_t (B, H). gates: as saved by :func:`forward_step_ref`. h_prev: h_{t-1}.
        gc, c, c_prev: LSTM only: dL/dc_t from later steps, c_t, c_{t-1}. gm: extra dL/dm_t.

    Returns:
        ``(dm, dq, gc_prev)``: dL/dm_t (B, 4H); its hidden-product part (B, G*H); for the LSTM
        dL/dc_{t-1} through the forget gate.
    """
    s0, s1, s2, s3 = gates.chunk(4, dim=1)
    gc_prev = None
    if c is not None:
        tc = torch.tanh(c)
        dc = gc + gh * s3 * (1 - tc * tc)
        dm = torch.cat(
            (
                dc * s2 * s0 * (1 - s0),
                dc * c_prev * s1 * (1 - s1),
                dc * s0 * (1 - s2 * s2),
                gh * tc * s3 * (1 - s3),
            ),
            1,
        )
        gc_prev = dc * s1
    else:
        da = gh * (1 - s1) * (1 - s2 * s2)
        dm = torch.cat(
            (da * s3 * s0 * (1 - s0), gh * (h_prev - s2) * s1 * (1 - s1), da, da * s0), 1
        )
    if gm is not None:
        dm = dm + gm
    if c is not None:
        return dm, dm, gc_prev
    hidden = gh.shape[1]
    return dm, torch.cat((dm[:, : 2 * hidden], dm[:, 3 * hidden :]), 1), gc_prev


def _forward_torch(p, h0, hhat0, c0, weight_hh, theta):
    steps = p.shape[0]
    out, hhat_seq = p.new_empty(steps, *h0.shape), p.new_empty(steps, *h0.shape)
    send_seq = torch.empty(steps, *h0.shape, dtype=torch.bool, device=p.device)
    gates_seq = torch.empty_like(p)
    c_seq = None if c0 is None else p.new_empty(steps, *h0.shape)
    h, hhat, c, m = h0, hhat0, c0, None
    for t in range(steps):
        hhat, send, m, gates, h, c = forward_step_ref(p[t], h, hhat, hhat0, weight_hh, theta, c)
        out[t], hhat_seq[t], send_seq[t], gates_seq[t] = h, hhat, send, gates
        if c_seq is not None:
            c_seq[t] = c
    return out, hhat_seq, m, c_seq, send_seq, gates_seq


def _backward_torch(saved, g_out, g_hhat, g_m, g_c):
    h0, hhat0, c0, weight_hh, out, hhat_seq, send, gates, c_seq = saved
    steps = out.shape[0]
    lstm = c0 is not None
    dp = torch.empty_like(gates)
    dq = g_out.new_empty(steps, *h0.shape[:1], weight_hh.shape[0])

    def h_prev(t):
        return out[t - 1] if t > 0 else h0

    def c_prev(t):
        if not lstm:
            return None
        return c_seq[t - 1] if t > 0 else c0

    last = steps - 1
    gh, ghh = g_out[last], torch.zeros_like(h0)
    dp[last], dq[last], gc = gates_backward_ref(
        gh, gates[last], h_prev(last), g_c, c_seq[last] if lstm else None, c_prev(last), g_m
    )
    for t in range(last, -1, -1):
        dhhat = ghh + g_hhat[t] + dq[t] @ weight_hh
        send_t = send[t]
        g_prev = torch.where(send_t, dhhat, 0.0)
        if not lstm:
            hidden = h0.shape[1]
            g_prev = g_prev + gates[t][:, hidden : 2 * hidden] * gh
        ghh = torch.where(send_t, 0.0, dhhat)
        if t > 0:
            g_prev = g_prev + g_out[t - 1]
            dp[t - 1], dq[t - 1], gc = gates_backward_ref(
                g_prev, gates[t - 1], h_prev(t - 1), gc, c_seq[t - 1] if lstm else None,
                c_prev(t - 1), None,
            )  # fmt: skip
        gh = g_prev
    return dp, dq, gh, ghh, gc


# ---------------------------------------------------------------------------------------------
# Triton launches
# ---------------------------------------------------------------------------------------------


def _train_blocks(hidden: int) -> tuple[int, int, int]:
    """(block_b, block_h, block_k): tl.dot tiles of 16+, enough programs to fill a GPU."""
    return 16, (32 if hidden >= 1024 else 16), 32


def _forward_triton(p, h0, hhat0, c0, weight_hh, theta):
    import triton

    from .triton_common import kernels, precision

    k = kernels()
    steps, batch, hidden = p.shape[0], h0.shape[0], h0.shape[1]
    lstm = c0 is not None
    bb, bh, bk = _train_blocks(hidden)
    grid = (triton.cdiv(hidden, bh), triton.cdiv(batch, bb))
    w_t = weight_hh.t().contiguous()
    out, hhat_seq = p.new_empty(steps, batch, hidden), p.new_empty(steps, batch, hidden)
    send_seq = torch.empty(steps, batch, hidden, dtype=torch.int8, device=p.device)
    gates_seq, m = torch.empty_like(p), p.new_empty(batch, 4 * hidden)
    c_seq = p.new_empty(steps, batch, hidden) if lstm else None
    prec = precision(p.dtype, p.device)
    for t in range(steps):
        k.train_forward_step_kernel[grid](
            p[t], out[t - 1] if t else h0, hhat_seq[t - 1] if t else hhat0, hhat0, w_t, theta,
            hhat_seq[t], send_seq[t], m, gates_seq[t], out[t],
            (c_seq[t - 1] if t else c0) if lstm else h0, c_seq[t] if lstm else h0,
            batch, hidden,
            LSTM=lstm, PRECISION=prec, BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=bk,
        )  # fmt: skip
    return out, hhat_seq, m, c_seq, send_seq.bool(), gates_seq


def _backward_triton(saved, g_out, g_hhat, g_m, g_c):
    import triton

    from .triton_common import kernels, precision

    k = kernels()
    h0, hhat0, c0, weight_hh, out, hhat_seq, send, gates, c_seq = saved
    steps, batch, hidden = out.shape
    lstm = c0 is not None
    bb, bh, bk = _train_blocks(hidden)
    grid = (triton.cdiv(hidden, bh), triton.cdiv(batch, bb))
    w = weight_hh.contiguous()
    send = send.to(torch.int8)
    g_out, g_hhat = g_out.contiguous(), g_hhat.contiguous()
    dp = torch.empty_like(gates)
    dq = g_out.new_empty(steps, batch, weight_hh.shape[0])
    gh_ring, ghh_ring = g_out.new_empty(2, batch, hidden), g_out.new_empty(2, batch, hidden)
    gc_ring = g_out.new_zeros(2, batch, hidden)
    prec = precision(out.dtype, out.device)

    def h_prev(t):
        return out[t - 1] if t > 0 else h0

    def c_at(t):
        if not lstm:
            return h0
        return c_seq[t] if t >= 0 else c0

    last = steps - 1
    k.train_backward_last_kernel[grid](
        g_out[last], g_c.contiguous() if lstm else h0, g_m.contiguous(), gates[last],
        h_prev(last), c_at(last), c_at(last - 1), dp[last], dq[last],
        gh_ring[last % 2], ghh_ring[last % 2], gc_ring[(last - 1) % 2],
        batch, hidden, LSTM=lstm, BLOCK_B=bb, BLOCK_H=bh,
    )  # fmt: skip
    for t in range(last, -1, -1):
        prev = max(t - 1, 0)  # at t = 0 the *_prev arguments are not read
        k.train_backward_step_kernel[grid](
            dq[t], w, gates[t], send[t], gh_ring[t % 2], ghh_ring[t % 2], g_hhat[t],
            gh_ring[(t - 1) % 2], ghh_ring[(t - 1) % 2], g_out[prev], gates[prev],
            h_prev(prev), gc_ring[(t - 1) % 2], c_at(t - 1), c_at(t - 2), dp[prev], dq[prev],
            gc_ring[t % 2], batch, hidden, int(t > 0),
            LSTM=lstm, PRECISION=prec, BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=bk,
        )  # fmt: skip
    return dp, dq, gh_ring[1], ghh_ring[1], gc_ring[1] if lstm else None


class _GraphedCall:
    """``fn(*args)`` captured once in a CUDA graph over static copies of its arguments.

    A call copies the arguments in, replays the graph and returns copies of the outputs (the
    static outputs are overwritten by the next call, e.g. the next layer of the same shape).
    One training step is T launches each way; replaying them from a graph removes the host cost
    of each launch, which is of the order of a small step's GPU time.
    """

    def __init__(self, fn, args) -> None:
        from .triton_common import capture_graph

        self.inputs = [None if a is None else a.clone() for a in args]
        self.graph, self.outputs = capture_graph(lambda: fn(*self.inputs))

    def __call__(self, *args):
        for static, a in zip(self.inputs, args, strict=True):
            if static is not None:
                static.copy_(a)
        self.graph.replay()
        return tuple(None if o is None else o.clone() for o in self.outputs)


_GRAPHS: OrderedDict[tuple, _GraphedCall] = OrderedDict()
# Two directions, every power-of-two segment length of a few shapes (see _delta_layer_train).
MAX_GRAPHS = 32


def _graphed(name: str, fn, args):
    """Run ``fn(*args)`` through a cached :class:`_GraphedCall` keyed on the arguments' layout."""
    key = (name, torch.backends.cuda.matmul.allow_tf32) + tuple(
        None if a is None else (tuple(a.shape), a.dtype, a.device) for a in args
    )
    call = _GRAPHS.pop(key, None)
    if call is None:
        call = _GraphedCall(fn, args)
    _GRAPHS[key] = call
    while len(_GRAPHS) > MAX_GRAPHS:
        _GRAPHS.popitem(last=False)
    return call(*args)


def _backward_triton_flat(*args):
    return _backward_triton(args[:9], *args[9:])


# ---------------------------------------------------------------------------------------------
# The autograd function
# ---------------------------------------------------------------------------------------------


def _guard(device: torch.device, impl: str):
    """The current CUDA device for the Triton launches (autograd may run the backward on a
    worker thread whose current device is another one)."""
    if impl != "triton":
        return contextlib.nullcontext()
    from .triton_common import device_guard

    return device_guard(device)


class DeltaRecurrence(torch.autograd.Function):
    r"""The recurrent part of a delta GRU/LSTM layer, with a hand-written backward.

    .. math::
        s_t = \lnot(|h_{t-1} - \hat{h}_{t-1}| \le \Theta_h), \quad
        \hat{h}_t = s_t\, ?\, h_{t-1} : \hat{h}_{t-1}, \quad
        m_t = P_t + W_{hh} (\hat{h}_t - \hat{h}_{-1}) \ (\text{GRU: into } r|z|n_h)

    then the gates as in the spec. The send masks are constants for the gradient.

    Inputs: ``p`` (T, B, 4H), ``h0``, ``hhat0`` (B, H), ``c0`` (B, H) or None (GRU),
    ``weight_hh`` (G*H, H), ``theta_h`` (H,), ``impl`` ``"torch"`` or ``"triton"``, ``graph``:
    with Triton on CUDA, replay each direction's launches from a cached CUDA graph.

    Outputs: ``out`` (T, B, H) (h_t; the final h is ``out[-1]``), ``hhat_seq`` (T, B, H) (ĥ_t; the
    final ĥ is its last step), ``m_T`` (B, 4H), ``c_T`` (B, H) (an empty tensor for the GRU),
    ``send`` (T, B, H) bool, not differentiable.
    """

    @staticmethod
    def forward(ctx, p, h0, hhat0, c0, weight_hh, theta_h, impl, graph):
        args = (
            p.contiguous(), h0.contiguous(), hhat0.contiguous(),
            None if c0 is None else c0.contiguous(), weight_hh.contiguous(), theta_h.contiguous(),
        )  # fmt: skip
        graph = graph and impl == "triton" and p.is_cuda
        with torch.no_grad(), _guard(p.device, impl):
            if graph:
                results = _graphed("forward", _forward_triton, args)
            else:
                results = (_forward_triton if impl == "triton" else _forward_torch)(*args)
        out, hhat_seq, m, c_seq, send, gates = results
        ctx.impl, ctx.graph = impl, graph
        ctx.save_for_backward(h0, hhat0, c0, weight_hh, out, hhat_seq, send, gates, c_seq)
        ctx.mark_non_differentiable(send)
        c_last = c_seq[-1] if c0 is not None else p.new_zeros(0)
        return out, hhat_seq, m, c_last, send

    @staticmethod
    def backward(ctx, g_out, g_hhat, g_m, g_c, _g_send):
        saved = ctx.saved_tensors
        h0, hhat0, c0, weight_hh, _, hhat_seq = saved[:6]
        grads = (g_out, g_hhat, g_m, g_c if c0 is not None else None)
        with torch.no_grad(), _guard(h0.device, ctx.impl):
            if ctx.graph:
                results = _graphed("backward", _backward_triton_flat, (*saved, *grads))
            else:
                results = (_backward_triton if ctx.impl == "triton" else _backward_torch)(
                    saved, *grads
                )
            dp, dq, dh0, ghh, dc0 = results
            # ĥ_{-1} enters every m_t through -W_hh ĥ_{-1}, and through the send chain (ghh).
            dq2 = dq.reshape(-1, dq.shape[-1])
            dhhat0 = ghh - dq.sum(0) @ weight_hh
            dweight_hh = dq2.t() @ (hhat_seq - hhat0).reshape(dq2.shape[0], -1)
        return dp, dh0, dhhat0, dc0, dweight_hh, None, None, None


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def _resolve_impl(impl: str, x: Tensor) -> str:
    if impl not in IMPLS:
        raise BackendError(f"impl must be one of {IMPLS}; got {impl!r}")
    if impl != "auto":
        if impl == "triton":
            from .triton_common import interpret  # ImportError: triton is not installed

            cuda_or_interpreted = x.is_cuda or interpret()
            if not cuda_or_interpreted or x.dtype not in (torch.float32, torch.float64):
                raise BackendError(
                    f"impl='triton' needs a CUDA tensor (or TRITON_INTERPRET=1) of float32/float64; "
                    f"got device={x.device}, dtype={x.dtype}"
                )
        return impl
    if x.is_cuda and x.dtype == torch.float32:
        try:
            from . import triton as _  # noqa: F401
        except ImportError:
            return "torch"
        return "triton"
    return "torch"


def _theta(theta: Tensor | float, size: int, like: Tensor) -> Tensor:
    return torch.as_tensor(theta, dtype=like.dtype, device=like.device).expand(size).contiguous()


def _send_index(x: Tensor, x_hat: Tensor, theta: Tensor, impl: str) -> Tensor:
    if impl != "triton":
        return send_index_ref(x, x_hat, theta)
    from .triton_common import kernels, launch_scan

    last = torch.empty(x.shape, dtype=torch.int64, device=x.device)
    with _guard(x.device, impl):
        launch_scan(kernels(), x.contiguous(), x_hat.clone(), theta, None, last)
    return last


def _counts(x_hat_seq, x_hat0, hhat_seq, hhat0) -> DeltaCounts:
    # A sent delta is never 0 (|Δ| > Θ >= 0, or NaN), so the held values' steps give the masks
    # exactly (a held inf or NaN is always sent again: its change is NaN).
    dx = x_hat_seq - torch.cat((x_hat0[None], x_hat_seq[:-1]))
    dh = hhat_seq - torch.cat((hhat0[None], hhat_seq[:-1]))
    return count_sends(dx, dh)


def _delta_layer_train(
    x, state, weight_ih, weight_hh, theta_x, theta_h, count, impl, use_graph, lstm
):
    steps, batch, inputs = x.shape
    hidden = weight_hh.shape[1]
    if steps == 0:
        counts = None
        if count:
            z = x.new_zeros(0, batch)
            zi = torch.zeros(0, batch, dtype=torch.int64, device=x.device)
            counts = DeltaCounts(zi, zi, zi[:, 0], zi[:, 0], z, z)
        return x.new_zeros(0, batch, hidden), state, counts
    impl = _resolve_impl(impl, x)
    theta_x = _theta(theta_x, inputs, x)
    theta_h = _theta(theta_h, hidden, x)
    graph = impl == "triton" and x.is_cuda and (use_graph is None or use_graph)
    if impl == "triton":
        # CUDA graphs are cached per shape: power-of-two segments keep their number small
        # whatever the lengths; the state (and its gradient) is carried from one to the next.
        from .triton_common import segments

        spans = list(segments(steps, graph))
        if len(spans) > 1:
            outs, parts = [], []
            for start, length in spans:
                out, state, counts = _delta_layer(
                    x[start : start + length], state, weight_ih, weight_hh, theta_x, theta_h,
                    count, impl, True, lstm,
                )  # fmt: skip
                outs.append(out)
                parts.append(counts)
            counts = DeltaCounts(*map(torch.cat, zip(*parts, strict=True))) if count else None
            return torch.cat(outs), state, counts
    return _delta_layer(x, state, weight_ih, weight_hh, theta_x, theta_h, count, impl, graph, lstm)


def _delta_layer(x, state, weight_ih, weight_hh, theta_x, theta_h, count, impl, graph, lstm):
    """One segment of :func:`_delta_layer_train` (thresholds expanded, impl resolved)."""
    hidden = weight_hh.shape[1]
    with torch.no_grad():
        last = _send_index(x.detach(), state.x_hat.detach(), theta_x, impl)
    x_hat_seq = torch.cat((state.x_hat[None], x)).gather(0, last)
    # One GEMM over all steps: M_x,t = M_x,-1 + W_ih (x̂_t - x̂_-1).
    gx = (x_hat_seq - state.x_hat) @ weight_ih.t()
    p = state.m + (gx if lstm else nnF.pad(gx, (0, hidden)))
    out, hhat_seq, m, c, send_h = DeltaRecurrence.apply(
        p, state.h, state.h_hat, state.c if lstm else None, weight_hh, theta_h, impl, graph,
    )  # fmt: skip
    h, x_hat, h_hat = out[-1], x_hat_seq[-1], hhat_seq[-1]
    new_state = DeltaLSTMState(h, c, x_hat, h_hat, m) if lstm else DeltaGRUState(h, x_hat, h_hat, m)
    counts = None
    if count:
        counts = _counts(x_hat_seq, state.x_hat, hhat_seq, state.h_hat)
    return out, new_state, counts


def delta_gru_train(
    x: Tensor,
    state: DeltaGRUState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    *,
    count: bool = False,
    impl: str = "auto",
    use_graph: bool | None = None,
) -> tuple[Tensor, DeltaGRUState, DeltaCounts | None]:
    """:func:`deltarnn.functional.delta_gru` for training: same values, same gradients.

    The input side is one GEMM over time, the recurrence one fused Triton launch per step each way
    on a GPU (a torch loop on a CPU). Gradients reach x, the initial state (h, x̂, ĥ, and m, hence
    the biases through :func:`~deltarnn.functional.gru_initial_state`) and both weights.
    No ``h_transform``: with a training transform, use the spec.

    Args:
        x, state, weight_ih, weight_hh, theta_x, theta_h, count: as for the spec.
        impl: ``"auto"`` (Triton for float32 CUDA tensors, else torch), ``"torch"``, ``"triton"``.
        use_graph: with Triton on CUDA, replay the per-step launches of the recurrence from a
            CUDA graph cached per shape (default: on CUDA).

    Returns:
        ``(output, state, counts)`` as the spec; ``counts.abs_x``/``abs_h`` are differentiable.
    """
    return _delta_layer_train(
        x, state, weight_ih, weight_hh, theta_x, theta_h, count, impl, use_graph, False
    )


def delta_lstm_train(
    x: Tensor,
    state: DeltaLSTMState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    *,
    count: bool = False,
    impl: str = "auto",
    use_graph: bool | None = None,
) -> tuple[Tensor, DeltaLSTMState, DeltaCounts | None]:
    """:func:`deltarnn.functional.delta_lstm` for training (see :func:`delta_gru_train`)."""
    return _delta_layer_train(
        x, state, weight_ih, weight_hh, theta_x, theta_h, count, impl, use_graph, True
    )
