"""Helpers of the C export tests: grid inputs, midpoint thresholds, the tolerance, models."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import deltarnn
from deltarnn.export import python_stream
from deltarnn.export.state_dict import RNNWithHead

# Inputs on the grid k/16 and input thresholds at its midpoints (2k+1)/32: a rounding difference
# between C and the spec can never flip an input mask bit.
GRID = 16


def spec_stream(module, frames: torch.Tensor, **kwargs):
    """:func:`deltarnn.export.python_stream` on the reference backend: ``module.streamer()``
    running the spec itself (the compiled engine's streamer is compared in one test only: its
    compilation takes tens of seconds per layer kind and dtype)."""
    return python_stream(module, frames, backend="reference", **kwargs)


def midpoint_thetas(gen: torch.Generator, size: int) -> torch.Tensor:
    """Per-feature thresholds at midpoints of the grid, between 1/32 and 11/32."""
    k = torch.randint(0, 6, (size,), generator=gen)
    return (2 * k + 1).float() / (2 * GRID)


def assert_close(actual, expected) -> None:
    """float32 tolerance of the engine's own tests (summation order, rational gates)."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


KINDS = {"gru": deltarnn.DeltaGRU, "lstm": deltarnn.DeltaLSTM}


def make_model(kind: str, layers: int, *, hidden=24, head=False, seed=0, thetas=True):
    """A delta RNN on 40 inputs, per-feature thresholds at grid midpoints (Θx) and varied Θh."""
    torch.manual_seed(seed)
    rnn = KINDS[kind](40, hidden, layers)
    gen = torch.Generator().manual_seed(seed + 1)
    if thetas:
        theta_x = [midpoint_thetas(gen, 40 if k == 0 else hidden) for k in range(layers)]
        theta_h = [0.02 + 0.1 * torch.rand(hidden, generator=gen) for _ in range(layers)]
        rnn.set_thresholds(theta_x, theta_h)
    if not head:
        return rnn
    return RNNWithHead(rnn, nn.Linear(hidden, 10))
