"""Helpers of the C export tests: grid inputs, midpoint thresholds, the tolerance, and the
Python side every export is compared with (the spec's stack streamer, frame by frame)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import deltarnn
from deltarnn.export.state_dict import RNNWithHead
from deltarnn.functional import RESYNC_EVERY
from deltarnn.ops import LayerParams
from deltarnn.ops.reference import StackStreamer

# Inputs on the grid k/16 and input thresholds at its midpoints (2k+1)/32: a rounding difference
# between C and the spec can never flip an input mask bit.
GRID = 16


def python_stream(
    module, frames: torch.Tensor, weights: str = "float32", resync_every: int = RESYNC_EVERY
):
    """Step ``module`` (a delta RNN, or a model with ``rnn`` and ``head``) over frames (T, I) with
    the reference backend's stack streamer: the spec (one frame at a time, layer after layer,
    the re-sync rule with ``resync_every``; ``weights="int8"`` on the weights of
    :func:`deltarnn.ops.int8.quantize_columns`).

    Returns:
        ``(out (T, O), sent_x (T, L), sent_h (T, L), since_sync (T, L))`` as numpy arrays: the
        last layer's h (or the head applied to it), each layer's send counts, and each layer's
        steps since its last dense re-sync (0 throughout without a period).
    """
    rnn = getattr(module, "rnn", module)
    head = getattr(module, "head", None)
    layers = [LayerParams(*rnn.layer_weights(k), *rnn.thresholds(k)) for k in range(rnn.num_layers)]
    streamer = StackStreamer(
        rnn.mode, layers, rnn.initial_state(1), count=True, weights=weights,
        resync_every=resync_every,
    )  # fmt: skip
    outs, sent_x, sent_h, since = [], [], [], []
    with torch.no_grad():
        for t in range(frames.shape[0]):
            v = streamer.step(frames[t : t + 1])
            if head is not None:
                v = head(v)
            outs.append(v[0].numpy())
            counts = streamer.counts()
            sent_x.append([int(c.nx[0, 0]) for c in counts])
            sent_h.append([int(c.nh[0, 0]) for c in counts])
            since.append([int(s.since_sync.expand(1)[0]) for s in streamer.state()])
    return np.array(outs), np.array(sent_x), np.array(sent_h), np.array(since)


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
