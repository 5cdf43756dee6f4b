"""Typed state of one delta-RNN layer, and the per-step send counts a run can report.

All tensors carry the batch dimension first. The memory ``m`` always has 4H columns:

* GRU:  ``[M_r | M_z | M_xn | M_hn]`` (the reset gate keeps input and hidden parts of n apart)
* LSTM: ``[M_i | M_f | M_g | M_o]``
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

#: Gates per layer kind: a GRU's weights stack r|z|n (3H rows), an LSTM's i|f|g|o (4H rows).
GATES = {"GRU": 3, "LSTM": 4}


class DeltaGRUState(NamedTuple):
    """State of one delta GRU layer between two calls.

    Attributes:
        h: hidden state h_t, shape (B, H).
        x_hat: last value sent of each input feature, shape (B, I).
        h_hat: last value sent of each hidden unit, shape (B, H).
        m: accumulated pre-activations ``[M_r | M_z | M_xn | M_hn]``, shape (B, 4H).
    """

    h: Tensor
    x_hat: Tensor
    h_hat: Tensor
    m: Tensor


class DeltaLSTMState(NamedTuple):
    """State of one delta LSTM layer between two calls.

    Attributes:
        h: hidden state h_t, shape (B, H).
        c: cell state c_t, shape (B, H).
        x_hat: last value sent of each input feature, shape (B, I).
        h_hat: last value sent of each hidden unit, shape (B, H).
        m: accumulated pre-activations ``[M_i | M_f | M_g | M_o]``, shape (B, 4H).
    """

    h: Tensor
    c: Tensor
    x_hat: Tensor
    h_hat: Tensor
    m: Tensor


class DeltaCounts(NamedTuple):
    """What one layer sent at each step, as observed from its masks.

    Attributes:
        nx: number of non-zero input deltas per step and sample, shape (T, B), int64.
        nh: number of non-zero hidden deltas per step and sample, shape (T, B), int64.
        ux: number of input columns non-zero for *any* sample of the batch, shape (T,), int64.
            These are the columns a batched engine has to fetch.
        uh: the same for hidden columns, shape (T,), int64.
        abs_x: sum over features of ``|Δx|`` per step and sample, shape (T, B), differentiable, for
            the L1 cost on the deltas (the reference backend fills it; kernels may leave None).
        abs_h: the same for ``|Δh|``.
    """

    nx: Tensor
    nh: Tensor
    ux: Tensor
    uh: Tensor
    abs_x: Tensor | None = None
    abs_h: Tensor | None = None
