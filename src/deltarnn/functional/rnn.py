"""Delta GRU and delta LSTM layers over a sequence: the spec every fast path is tested against.

Shape legend: T time steps, B batch, I input features, H hidden units.

Weights follow PyTorch (``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), gate order r|z|n for the
GRU and i|f|g|o for the LSTM), so ``torch.nn.GRU``/``LSTM`` parameters are used unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .checks import check_layer_args
from .delta_encode import delta_step, encode_sequence
from .state import MEMORY_BOUND, DeltaCounts, DeltaGRUState, DeltaLSTMState


def _bias_or_zeros(bias: Tensor | None, rows: int, like: Tensor) -> Tensor:
    return like.new_zeros(rows) if bias is None else bias


def gru_initial_memory(bias_ih: Tensor | None, bias_hh: Tensor | None, like: Tensor) -> Tensor:
    """The GRU memory before any delta was sent: ``[b_ir+b_hr | b_iz+b_hz | b_in | b_hn]``, (4H,)."""
    hidden = like.shape[0] // 3
    b_ih = _bias_or_zeros(bias_ih, 3 * hidden, like)
    b_hh = _bias_or_zeros(bias_hh, 3 * hidden, like)
    return torch.cat(
        (b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden :], b_hh[2 * hidden :])
    )


def lstm_initial_memory(bias_ih: Tensor | None, bias_hh: Tensor | None, like: Tensor) -> Tensor:
    """The LSTM memory before any delta was sent: ``b_ih + b_hh``, shape (4H,)."""
    rows = like.shape[0]
    return _bias_or_zeros(bias_ih, rows, like) + _bias_or_zeros(bias_hh, rows, like)


def gru_initial_state(
    weight_ih: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    batch_size: int,
    h0: Tensor | None = None,
) -> DeltaGRUState:
    """A fresh stream: x̂ = ĥ = 0, memories at the biases, h = h0 (or zeros).

    Because ĥ starts at 0, a non-zero h0 is sent on the first step. ``since_sync`` is the
    default 0-d zero.
    """
    hidden, inputs = weight_ih.shape[0] // 3, weight_ih.shape[1]
    zeros = weight_ih.new_zeros
    h = zeros(batch_size, hidden) if h0 is None else h0
    m = gru_initial_memory(bias_ih, bias_hh, weight_ih).expand(batch_size, -1).clone()
    return DeltaGRUState(h, zeros(batch_size, inputs), zeros(batch_size, hidden), m)


def lstm_initial_state(
    weight_ih: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    batch_size: int,
    h0: Tensor | None = None,
    c0: Tensor | None = None,
) -> DeltaLSTMState:
    """A fresh stream: x̂ = ĥ = 0, memories at the biases, h = h0, c = c0 (or zeros);
    ``since_sync`` the default 0-d zero."""
    hidden, inputs = weight_ih.shape[0] // 4, weight_ih.shape[1]
    zeros = weight_ih.new_zeros
    h = zeros(batch_size, hidden) if h0 is None else h0
    c = zeros(batch_size, hidden) if c0 is None else c0
    m = lstm_initial_memory(bias_ih, bias_hh, weight_ih).expand(batch_size, -1).clone()
    return DeltaLSTMState(h, c, zeros(batch_size, inputs), zeros(batch_size, hidden), m)


def count_sends(delta_x: Tensor, delta_h: Tensor) -> DeltaCounts:
    """Per-step send counts from the deltas of a run, (T, B, I) and (T, B, H)."""
    sent_x, sent_h = delta_x != 0, delta_h != 0
    return DeltaCounts(
        nx=sent_x.sum(-1),
        nh=sent_h.sum(-1),
        ux=sent_x.any(1).sum(-1),
        uh=sent_h.any(1).sum(-1),
        abs_x=delta_x.abs().sum(-1),
        abs_h=delta_h.abs().sum(-1),
    )


def delta_gru(
    x: Tensor,
    state: DeltaGRUState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    *,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    resync_every: int = 0,
    count: bool = False,
    h_transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, DeltaGRUState, DeltaCounts | None]:
    r"""One delta GRU layer over a sequence (equations: docs/equations.rst).

    .. math::
        \Delta x_t &= \mathrm{delta}(x_t, \hat{x}_{t-1}, \Theta_x), \quad
        \Delta h_t = \mathrm{delta}(h_{t-1}, \hat{h}_{t-1}, \Theta_h) \\
        M_{r,t} &= W_{ir}\Delta x_t + W_{hr}\Delta h_t + M_{r,t-1}, \quad
        M_{z,t} = W_{iz}\Delta x_t + W_{hz}\Delta h_t + M_{z,t-1} \\
        M_{xn,t} &= W_{in}\Delta x_t + M_{xn,t-1}, \quad M_{hn,t} = W_{hn}\Delta h_t + M_{hn,t-1} \\
        r &= \sigma(M_r),\ z = \sigma(M_z),\ n = \tanh(M_{xn} + r \odot M_{hn}),\
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    Biases live in the initial memory (see :func:`gru_initial_state`).

    Re-sync (rule in :mod:`deltarnn.functional.state`): at a step where a sample's memory before
    the step has an element that is non-finite or above :data:`MEMORY_BOUND` in magnitude, or
    where its ``since_sync + 1`` reaches ``resync_every``, its memory is recomputed densely,

    .. math::
        [M_r | M_z] = W_{i[rz]}\hat{x}_t + W_{h[rz]}\hat{h}_t + b_{i[rz]} + b_{h[rz]}, \quad
        M_{xn} = W_{in}\hat{x}_t + b_{in}, \quad M_{hn} = W_{hn}\hat{h}_t + b_{hn},

    and ``since_sync`` restarts at 0 (else it is incremented; with ``resync_every = 0`` it is not
    kept). With Θ = 0 this makes the layer
    equal ``torch.nn.GRU`` after non-finite or huge inputs too, and it bounds the drift of the
    accumulated memories on long streams.

    Args:
        x: input, shape (T, B, I).
        state: state before the first step (:func:`gru_initial_state` for a fresh stream).
        weight_ih: (3H, I). weight_hh: (3H, H).
        theta_x, theta_h: thresholds, floats or tensors broadcastable to (I,) and (H,).
        bias_ih, bias_hh: (3H,) each, the biases the state's memories started from (``None``:
            no bias); used by the re-sync.
        resync_every: period N of the dense re-sync in steps; 0 (the default here; modules and
            streamers use :data:`RESYNC_EVERY`) keeps only the bound rule and returns
            ``since_sync`` as it was given.
        count: also return the per-step send counts.
        h_transform: applied to h_{t-1} before it is delta-encoded, i.e. to the value the
            recurrent product sees (training methods: fixed-point rounding, noise). The state
            h itself is not changed. Transform the input sequence before the call for the x side.

    Returns:
        ``(output, state, counts)``: h_t for every step (T, B, H), the state after the last step,
        and :class:`DeltaCounts` when ``count`` is set (else ``None``).
    """
    check_layer_args(x, state, weight_ih, weight_hh, theta_x, theta_h, gates=3)
    return _delta_layer(
        "GRU", x, state, (weight_ih, weight_hh, bias_ih, bias_hh), theta_x, theta_h,
        resync_every, count, h_transform,
    )  # fmt: skip


def delta_lstm(
    x: Tensor,
    state: DeltaLSTMState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    *,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    resync_every: int = 0,
    count: bool = False,
    h_transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, DeltaLSTMState, DeltaCounts | None]:
    r"""One delta LSTM layer over a sequence (equations: docs/equations.rst).

    .. math::
        M_t &= W_{ih}\Delta x_t + W_{hh}\Delta h_t + M_{t-1} \quad (\text{one memory per gate } i|f|g|o) \\
        i &= \sigma(M_i),\ f = \sigma(M_f),\ g = \tanh(M_g),\ o = \sigma(M_o) \\
        c_t &= f \odot c_{t-1} + i \odot g, \quad h_t = o \odot \tanh(c_t)

    Re-sync as in :func:`delta_gru`, with :math:`M = W_{ih}\hat{x}_t + W_{hh}\hat{h}_t + b_{ih}
    + b_{hh}`.

    Args:
        x: input, shape (T, B, I).
        state: state before the first step (:func:`lstm_initial_state` for a fresh stream).
        weight_ih: (4H, I). weight_hh: (4H, H). bias_ih, bias_hh: (4H,) each, or ``None``.
        theta_x, theta_h, resync_every, count, h_transform: as for :func:`delta_gru`.

    Returns:
        ``(output, state, counts)`` as for :func:`delta_gru`.
    """
    check_layer_args(x, state, weight_ih, weight_hh, theta_x, theta_h, gates=4)
    return _delta_layer(
        "LSTM", x, state, (weight_ih, weight_hh, bias_ih, bias_hh), theta_x, theta_h,
        resync_every, count, h_transform,
    )  # fmt: skip


def _delta_layer(kind, x, state, params, theta_x, theta_h, resync_every, count, h_transform):
    """:func:`delta_gru` (``kind`` "GRU") or :func:`delta_lstm` ("LSTM")."""
    weight_ih, weight_hh, bias_ih, bias_hh = params
    lstm = kind == "LSTM"
    hidden = weight_hh.shape[1]
    initial_memory = lstm_initial_memory if lstm else gru_initial_memory
    m0 = initial_memory(bias_ih, bias_hh, weight_ih)
    delta_x, held_x = encode_sequence(x, theta_x, state.x_hat)
    # The input side for all steps in one product; the recurrence still adds it step by step.
    gx = delta_x @ weight_ih.t()
    h, h_hat, m = state.h, state.h_hat, state.m
    c = state.c if lstm else None
    since = state.since_sync
    periodic = resync_every > 0
    if periodic:
        since = since.to(h.device).expand(h.shape[0])
    outputs, deltas_h = [], []
    for t in range(x.shape[0]):
        delta_h, h_hat = delta_step(h if h_transform is None else h_transform(h), h_hat, theta_h)
        resync = ~(m.abs() <= MEMORY_BOUND).all(dim=1)
        if periodic:
            since = since + 1
            resync = resync | (since >= resync_every)
        m = m + _memory(lstm, gx[t], delta_h @ weight_hh.t(), hidden)
        # Eager runs form the dense products only at steps that need them; a compiled graph
        # cannot branch on values, so there they are formed at every step (same result).
        if torch.compiler.is_compiling() or bool(resync.any()):
            dense = m0 + _memory(lstm, held_x[t] @ weight_ih.t(), h_hat @ weight_hh.t(), hidden)
            m = torch.where(resync[:, None], dense, m)
            if periodic:
                since = torch.where(resync, torch.zeros_like(since), since)
        if lstm:
            m_i, m_f, m_g, m_o = m.chunk(4, dim=1)
            c = torch.sigmoid(m_f) * c + torch.sigmoid(m_i) * torch.tanh(m_g)
            h = torch.sigmoid(m_o) * torch.tanh(c)
        else:
            m_r, m_z, m_xn, m_hn = m.chunk(4, dim=1)
            r, z = torch.sigmoid(m_r), torch.sigmoid(m_z)
            n = torch.tanh(m_xn + r * m_hn)
            h = (1 - z) * n + z * h
        outputs.append(h)
        if count:
            deltas_h.append(delta_h)
    out = torch.stack(outputs) if outputs else x.new_zeros(0, x.shape[1], hidden)
    counts = None
    if count:
        dh = torch.stack(deltas_h) if deltas_h else x.new_zeros(0, x.shape[1], hidden)
        counts = count_sends(delta_x, dh)
    x_hat = held_x[-1] if outputs else state.x_hat
    if lstm:
        return out, DeltaLSTMState(h, c, x_hat, h_hat, m, since), counts
    return out, DeltaGRUState(h, x_hat, h_hat, m, since), counts


def _memory(lstm: bool, gx: Tensor, gh: Tensor, hidden: int) -> Tensor:
    """Input and hidden products, (B, G*H) each, in the memory's layout (B, 4H): the LSTM adds
    them; the GRU adds its r and z parts and keeps the n parts apart, ``[r | z | xn | hn]``."""
    if lstm:
        return gx + gh
    two = 2 * hidden
    return torch.cat((gx[:, :two] + gh[:, :two], gx[:, two:], gh[:, two:]), dim=1)
