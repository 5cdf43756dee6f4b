"""What an export is checked against: the same module stepped frame by frame in Python.

The C step of :func:`~deltarnn.export.export_c` computes the spec one frame at a time, as the
library's streamer does (:meth:`deltarnn.DeltaGRU.streamer`, :class:`deltarnn.Streamer`).
:func:`python_stream` runs one over a recording and returns what
:meth:`deltarnn.export.HostBuild.run` returns, to compare before an export goes to a device.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..functional import RESYNC_EVERY
from .model import read_model


class PythonRun(NamedTuple):
    """Per-frame results of :func:`python_stream`, numpy arrays.

    Attributes:
        out: (T, O) float32, the last layer's h, or the head applied to it.
        sent_x, sent_h: (T, L) int64, each layer's send counts.
        since_sync: (T, L) int64, each layer's steps since its memories were last recomputed
            densely (0 throughout without a periodic re-sync).
    """

    out: np.ndarray
    sent_x: np.ndarray
    sent_h: np.ndarray
    since_sync: np.ndarray


def python_stream(
    module: nn.Module,
    frames: torch.Tensor,
    *,
    weights: str = "float32",
    resync_every: int = RESYNC_EVERY,
    backend: str = "auto",
) -> PythonRun:
    """Step ``module`` over ``frames`` (T, I) from a fresh state, batch 1, with the module's
    streamer (``module.streamer()``, the same ``weights`` and ``resync_every``), as an export of
    it would.

    Args:
        module: what :func:`~deltarnn.export.export_c` takes (a delta RNN or cell, or a model with
            one as ``rnn`` and an ``nn.Linear`` ``head``); checked the same way.
        frames: (T, I) float32.
        weights: ``"float32"`` or ``"int8"`` (one scale per column,
            :func:`deltarnn.ops.int8.quantize_columns`, as the export writes them).
        resync_every: the period of the dense re-sync (0: only the bound rule).
        backend: the streamer's backend (``"auto"``: the compiled CPU engine where it runs).
    """
    read_model(module, weights=weights, resync_every=resync_every)  # the export's checks
    rnn = getattr(module, "rnn", module)
    head = getattr(module, "head", None)
    streamer = rnn.streamer(
        1, weights=weights, count=True, backend=backend, resync_every=resync_every
    )
    outs, sent_x, sent_h, since = [], [], [], []
    with torch.no_grad():
        for t in range(frames.shape[0]):
            v = streamer.step(frames[t : t + 1])
            if head is not None:
                v = head(v)
            outs.append(v[0].numpy().copy())
            counts, state = streamer.counts(), streamer.state()
            if not isinstance(counts, list):  # a cell's streamer: one layer
                counts, state = [counts], (state,)
            sent_x.append([int(c.nx[0, 0]) for c in counts])
            sent_h.append([int(c.nh[0, 0]) for c in counts])
            since.append([int(s.since_sync.expand(1)[0]) for s in state])
    shape = (frames.shape[0], rnn.num_layers)
    return PythonRun(
        np.array(outs, np.float32).reshape(frames.shape[0], -1),
        np.array(sent_x, np.int64).reshape(shape),
        np.array(sent_h, np.int64).reshape(shape),
        np.array(since, np.int64).reshape(shape),
    )
