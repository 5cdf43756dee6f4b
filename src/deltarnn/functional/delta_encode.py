"""Delta encoding against the last value sent (equations: docs/equations.rst)."""

from __future__ import annotations

import torch
from torch import Tensor


def delta_step(x: Tensor, x_hat: Tensor, theta: Tensor | float) -> tuple[Tensor, Tensor]:
    """One step of delta encoding.

    A component is sent unless its change since it was last *sent* is within the threshold::

        send    = not (|x - x_hat| <= theta)     (i.e. |x - x_hat| > theta, or the change is NaN)
        delta   = send ? x - x_hat : 0
        x_hat'  = send ? x : x_hat

    Comparing against the last value sent (not the previous step) keeps ``|x - x_hat'| <= theta``
    at every step, so sub-threshold drift is never lost. With ``theta = 0`` an unchanged component
    is skipped, which is lossless. A NaN change is sent, so NaN (and inf, whose change is inf or
    NaN) reaches the products as it would in a dense network.

    Gradients flow through the values sent; the send mask is treated as a constant.

    Args:
        x: current value, shape (B, F).
        x_hat: last value sent, shape (B, F).
        theta: threshold, a float or a tensor broadcastable to (F,).

    Returns:
        ``(delta, x_hat')``, both shape (B, F).
    """
    diff = x - x_hat
    send = ~(diff.abs() <= theta)
    delta = torch.where(send, diff, torch.zeros_like(diff))
    return delta, torch.where(send, x, x_hat)


def delta_encode(x: Tensor, theta: Tensor | float, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """Delta-encode a whole sequence.

    Args:
        x: sequence, shape (T, B, F).
        theta: threshold, a float or a tensor broadcastable to (F,).
        x_hat: last value sent before the first step, shape (B, F) (zeros for a fresh stream).

    Returns:
        ``(delta, x_hat_T)``: the deltas, shape (T, B, F), and the last values sent after the
        final step, shape (B, F).
    """
    delta, held = encode_sequence(x, theta, x_hat)
    return delta, (held[-1] if held.shape[0] else x_hat)


def encode_sequence(x: Tensor, theta: Tensor | float, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`delta_encode` that also returns the values held after each step.

    Returns:
        ``(delta, held)``, both shape (T, B, F): ``held[t]`` is x̂ after step t.
    """
    deltas, held = [], []
    for t in range(x.shape[0]):
        delta, x_hat = delta_step(x[t], x_hat, theta)
        deltas.append(delta)
        held.append(x_hat)
    if not deltas:
        return x.new_zeros(x.shape), x.new_zeros(x.shape)
    return torch.stack(deltas), torch.stack(held)
