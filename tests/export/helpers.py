"""Helpers of the C export tests: grid inputs, midpoint thresholds, the tolerance, and the
Python side every export is compared with (the CPU engine's streamer, frame by frame)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import deltarnn
from deltarnn.export.state_dict import RNNWithHead
from deltarnn.ops.cpu import CPUStreamer, pack, pack_int8

# Inputs on the grid k/16 and input thresholds at its midpoints (2k+1)/32: a rounding difference
# between C and numba can never flip an input mask bit.
GRID = 16


def python_stream(module, frames: torch.Tensor, weights: str = "float32"):
    """Step ``module`` (a delta RNN, or a model with ``rnn`` and ``head``) over frames (T, I).

    Returns:
        ``(out (T, O), sent_x (T, L), sent_h (T, L))`` as numpy arrays: the last layer's h (or
        the head applied to it) and each layer's send counts.
    """
    rnn = getattr(module, "rnn", module)
    head = getattr(module, "head", None)
    packer = pack_int8 if weights == "int8" else pack
    state = rnn.initial_state(1)
    streamers = [
        CPUStreamer(packer(*rnn.layer_weights(k)[:2]), state[k], *rnn.thresholds(k), count=True)
        for k in range(rnn.num_layers)
    ]
    outs, sent_x, sent_h = [], [], []
    with torch.no_grad():
        for t in range(frames.shape[0]):
            v = frames[t : t + 1]
            for s in streamers:
                v = s.step(v).clone()
            if head is not None:
                v = head(v)
            outs.append(v[0].numpy())
            sent_x.append([int(s.last_counts.nx[0, 0]) for s in streamers])
            sent_h.append([int(s.last_counts.nh[0, 0]) for s in streamers])
    return np.array(outs), np.array(sent_x), np.array(sent_h)


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
