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
from .delta_encode import delta_encode, delta_step
from .state import DeltaCounts, DeltaGRUState, DeltaLSTMState


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

    Because ĥ starts at 0, a non-zero h0 is sent on the first step.
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
    """A fresh stream: x̂ = ĥ = 0, memories at the biases, h = h0, c = c0 (or zeros)."""
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

    Args:
        x: input, shape (T, B, I).
        state: state before the first step (:func:`gru_initial_state` for a fresh stream).
        weight_ih: (3H, I). weight_hh: (3H, H).
        theta_x, theta_h: thresholds, floats or tensors broadcastable to (I,) and (H,).
        count: also return the per-step send counts.
        h_transform: applied to h_{t-1} before it is delta-encoded, i.e. to the value the
            recurrent product sees (training methods: fixed-point rounding, noise). The state
            h itself is not changed. Transform the input sequence before the call for the x side.

    Returns:
        ``(output, state, counts)``: h_t for every step (T, B, H), the state after the last step,
        and :class:`DeltaCounts` when ``count`` is set (else ``None``).
    """
    check_layer_args(x, state, weight_ih, weight_hh, theta_x, theta_h, gates=3)
    hidden = weight_hh.shape[1]
    delta_x, x_hat = delta_encode(x, theta_x, state.x_hat)
    # The input side for all steps in one product; the recurrence still adds it step by step.
    gx = delta_x @ weight_ih.t()
    h, h_hat, m = state.h, state.h_hat, state.m
    outputs, deltas_h = [], []
    for t in range(x.shape[0]):
        delta_h, h_hat = delta_step(h if h_transform is None else h_transform(h), h_hat, theta_h)
        gh = delta_h @ weight_hh.t()
        m = m + torch.cat(
            (
                gx[t, :, : 2 * hidden] + gh[:, : 2 * hidden],
                gx[t, :, 2 * hidden :],
                gh[:, 2 * hidden :],
            ),
            dim=1,
        )
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
    return out, DeltaGRUState(h, x_hat, h_hat, m), counts


def delta_lstm(
    x: Tensor,
    state: DeltaLSTMState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    *,
    count: bool = False,
    h_transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, DeltaLSTMState, DeltaCounts | None]:
    r"""One delta LSTM layer over a sequence (equations: docs/equations.rst).

    .. math::
        M_t &= W_{ih}\Delta x_t + W_{hh}\Delta h_t + M_{t-1} \quad (\text{one memory per gate } i|f|g|o) \\
        i &= \sigma(M_i),\ f = \sigma(M_f),\ g = \tanh(M_g),\ o = \sigma(M_o) \\
        c_t &= f \odot c_{t-1} + i \odot g, \quad h_t = o \odot \tanh(c_t)

    Args:
        x: input, shape (T, B, I).
        state: state before the first step (:func:`lstm_initial_state` for a fresh stream).
        weight_ih: (4H, I). weight_hh: (4H, H).
        theta_x, theta_h: thresholds, floats or tensors broadcastable to (I,) and (H,).
        count: also return the per-step send counts.
        h_transform: as for :func:`delta_gru`.

    Returns:
        ``(output, state, counts)`` as for :func:`delta_gru`.
    """
    check_layer_args(x, state, weight_ih, weight_hh, theta_x, theta_h, gates=4)
    hidden = weight_hh.shape[1]
    delta_x, x_hat = delta_encode(x, theta_x, state.x_hat)
    gx = delta_x @ weight_ih.t()
    h, c, h_hat, m = state.h, state.c, state.h_hat, state.m
    outputs, deltas_h = [], []
    for t in range(x.shape[0]):
        delta_h, h_hat = delta_step(h if h_transform is None else h_transform(h), h_hat, theta_h)
        m = m + gx[t] + delta_h @ weight_hh.t()
        m_i, m_f, m_g, m_o = m.chunk(4, dim=1)
        c = torch.sigmoid(m_f) * c + torch.sigmoid(m_i) * torch.tanh(m_g)
        h = torch.sigmoid(m_o) * torch.tanh(c)
        outputs.append(h)
        if count:
            deltas_h.append(delta_h)
    out = torch.stack(outputs) if outputs else x.new_zeros(0, x.shape[1], hidden)
    counts = None
    if count:
        dh = torch.stack(deltas_h) if deltas_h else x.new_zeros(0, x.shape[1], hidden)
        counts = count_sends(delta_x, dh)
    return out, DeltaLSTMState(h, c, x_hat, h_hat, m), counts
