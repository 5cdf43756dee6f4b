"""The fused training backend: delta layers with a hand-written backward.

The input side is one GEMM over the held values x̂ and the recurrence a custom autograd function
(:mod:`deltarnn.ops.triton_train`): a Triton kernel per step on a CUDA float32 tensor, a PyTorch
loop elsewhere. Values and gradients equal autograd through the spec (the send masks held
constant), with far fewer operations recorded, so it is what ``backend="auto"`` picks when
gradients are needed. Training transforms (rounding, noise, learnable thresholds) need the
reference backend.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .triton_train import delta_gru_train, delta_lstm_train

NAME = "fused"
# Runs on the live parameters (autograd needs them), so modules must not cache a packed copy.
DIFFERENTIABLE = True


def is_available() -> bool:
    return True


def supports(device: torch.device, dtype: torch.dtype, needs_grad: bool) -> bool:
    return dtype in (torch.float32, torch.float64)


def pack(
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    # The biases serve the memory re-sync, which this backend does not apply (see gru()).
    return weight_ih, weight_hh


def gru(x, state, packed, theta_x, theta_h, *, count=False, resync_every=0):
    """The spec's values and gradients, accumulating the memories without the re-sync rule
    (``resync_every`` is not applied): it differs from the spec once a memory leaves
    ``MEMORY_BOUND`` or a period elapses."""
    return delta_gru_train(x, state, *packed, theta_x, theta_h, count=count)


def lstm(x, state, packed, theta_x, theta_h, *, count=False, resync_every=0):
    """As :func:`gru`, for the LSTM."""
    return delta_lstm_train(x, state, *packed, theta_x, theta_h, count=count)
