"""Typed state of one delta-RNN layer, the per-step send counts a run can report, and the
constants of the memory re-sync rule that every backend applies.

All tensors carry the batch dimension first. The memory ``m`` always has 4H columns:

* GRU:  ``[M_r | M_z | M_xn | M_hn]`` (the reset gate keeps input and hidden parts of n apart)
* LSTM: ``[M_i | M_f | M_g | M_o]``

Re-sync (see :func:`deltarnn.functional.delta_gru`): accumulated memories pick up rounding error
step after step, and a huge or non-finite input leaves them unrecoverable by accumulation alone
(``inf - inf``; ``1e30 - 1e30`` cancels every digit of the rest). So at a step where either

* the memory row of a sample, as it stood before the step, has an element that is not finite
  or whose magnitude exceeds :data:`MEMORY_BOUND`, or
* the periodic re-sync is on (a period N = ``resync_every`` > 0) and the sample's ``since_sync``
  counter, incremented for this step, reaches N,

that sample's memory is recomputed densely from the values held, ``M = W_ih x̂_t + W_hh ĥ_t + b``
(x̂_t and ĥ_t after this step's encoding; b arranged as in the initial memory), instead of
``M + W Δ``; its counter restarts at 0. The counter travels in the state, so chunked input equals
one pass. With N = 0 only the bound rule applies and the counter is not kept (returned as
given). Every backend applies this rule exactly (it changes values, not only rounding).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

#: Gates per layer kind: a GRU's weights stack r|z|n (3H rows), an LSTM's i|f|g|o (4H rows).
GATES = {"GRU": 3, "LSTM": 4}

#: A memory element whose magnitude exceeds this (or that is not finite) is recomputed densely at
#: the next step. Trained pre-activations stay far below it (σ and tanh saturate by |M| = 20);
#: after one cancellation from this size, the float32 error is about 1024 * 2^-24 = 6e-5.
MEMORY_BOUND = 1024.0

#: Default period of the dense re-sync of the memories in modules and streamers (steps; 0 = only
#: the bound rule). One dense product every 1024 steps adds 0.1 % of a dense step per step.
RESYNC_EVERY = 1024

# The since_sync of a state built without one: every sample at 0. A 0-d inference tensor, so the
# one default shared by all such states cannot be written in place (outside inference mode).
with torch.inference_mode():
    _NO_STEPS = torch.zeros((), dtype=torch.int64)


class DeltaGRUState(NamedTuple):
    """State of one delta GRU layer between two calls.

    Attributes:
        h: hidden state h_t, shape (B, H).
        x_hat: last value sent of each input feature, shape (B, I).
        h_hat: last value sent of each hidden unit, shape (B, H).
        m: accumulated pre-activations ``[M_r | M_z | M_xn | M_hn]``, shape (B, 4H).
        since_sync: steps since each sample's memory was last computed densely, int64, shape
            (B,), or () for all samples at once (see the module docstring). A state built with
            four fields gets a 0-d zero.
    """

    h: Tensor
    x_hat: Tensor
    h_hat: Tensor
    m: Tensor
    since_sync: Tensor = _NO_STEPS


class DeltaLSTMState(NamedTuple):
    """State of one delta LSTM layer between two calls.

    Attributes:
        h: hidden state h_t, shape (B, H).
        c: cell state c_t, shape (B, H).
        x_hat: last value sent of each input feature, shape (B, I).
        h_hat: last value sent of each hidden unit, shape (B, H).
        m: accumulated pre-activations ``[M_i | M_f | M_g | M_o]``, shape (B, 4H).
        since_sync: as in :class:`DeltaGRUState`.
    """

    h: Tensor
    c: Tensor
    x_hat: Tensor
    h_hat: Tensor
    m: Tensor
    since_sync: Tensor = _NO_STEPS


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
