"""A stream's state in a file: :func:`save_state` and :func:`load_state`.

A live stream that must survive its process (a server restarted, a device that sleeps) saves the
state it reached, ``streamer.state()`` or the state ``stream()`` returned, and resumes from it in
another process with ``module.streamer(state=...)`` or ``module.stream(x, state)``.

The file is safetensors (no pickle): one tensor per field, named ``<layer>.<field>``
(``0.h``, ``0.x_hat``, ``1.m``, ``1.since_sync``, ...), and metadata naming the format, the
layer kind (GRU or LSTM) and the number of layers, or ``cell`` for a cell's single layer state.
It is written through a temporary file renamed into place (:mod:`deltarnn.tensor_files`): a
crash leaves the previous file or none, never half of one. :func:`load_state` checks what it
reads (every field present, nothing else, dtypes, shapes that fit each other) and raises
:class:`~deltarnn.errors.CheckpointError` naming the file; the module that resumes it checks
that the sizes are its own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError, ShapeError
from ..functional import DeltaGRUState, DeltaLSTMState
from ..tensor_files import read_tensors, write_tensors

FORMAT = "deltarnn-stream-state"
VERSION = "1"
_TYPES = {"GRU": DeltaGRUState, "LSTM": DeltaLSTMState}


def save_state(path: str | Path, state) -> None:
    """Write a stream's state to ``path`` (a ``.safetensors`` file).

    Args:
        path: the file, replaced whole if it exists.
        state: a module's per-layer tuple of :class:`~deltarnn.DeltaGRUState` /
            :class:`~deltarnn.DeltaLSTMState`, or one such layer state (a cell's).
    """
    cell = isinstance(state, (DeltaGRUState, DeltaLSTMState))
    layers = (state,) if cell else state
    if not isinstance(layers, (tuple, list)) or not layers:
        raise ShapeError(
            "state must be a DeltaGRUState/DeltaLSTMState or a non-empty tuple of them, got "
            f"{type(state).__name__}"
        )
    kinds = {type(s) for s in layers}
    if len(kinds) != 1 or not kinds <= set(_TYPES.values()):
        raise ShapeError(
            "state must hold layer states of one kind (DeltaGRUState or DeltaLSTMState), got "
            f"{sorted(t.__name__ for t in kinds)}"
        )
    state_type = kinds.pop()
    for k, s in enumerate(layers):
        for field, t in zip(state_type._fields, s, strict=True):
            if not isinstance(t, Tensor):
                raise ShapeError(f"state[{k}].{field} must be a tensor, got {type(t).__name__}")
    # what load_state would refuse is refused here, before anything is copied or written
    _check_fields(list(layers), lambda message: ShapeError(f"state: {message}"))
    # copies: the fields of a state are views of one block, which safetensors refuses
    tensors = {
        f"{k}.{field}": t.detach().clone()
        for k, s in enumerate(layers)
        for field, t in zip(state_type._fields, s, strict=True)
    }
    kind = "GRU" if state_type is DeltaGRUState else "LSTM"
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "layers": "cell" if cell else str(len(layers)),
    }
    write_tensors(tensors, path, metadata)


def load_state(path: str | Path, device: torch.device | str | None = None):
    """The state :func:`save_state` wrote to ``path``: a per-layer tuple, or a layer state for a
    cell's, on the CPU or on ``device`` (the module's, to resume it there). Raises
    :class:`~deltarnn.errors.CheckpointError` (naming the file) for a file that is missing,
    unreadable, not a stream state, or whose fields do not fit together."""
    tensors, metadata = read_tensors(path, CheckpointError)

    def bad(message: str) -> CheckpointError:
        return CheckpointError(f"{path}: {message}")

    if metadata.get("format") != FORMAT:
        raise bad("not a deltarnn stream state (no format marker; save one with save_state)")
    if metadata.get("version") != VERSION:
        raise bad(f"stream state format version {metadata.get('version')!r}, this reads {VERSION}")
    kind = metadata.get("kind")
    if kind not in _TYPES:
        raise bad(f"layer kind {kind!r}, expected 'GRU' or 'LSTM'")
    state_type = _TYPES[kind]
    cell = metadata.get("layers") == "cell"
    layers = 1 if cell else _count(metadata.get("layers"), bad)
    expected = {f"{k}.{field}" for k in range(layers) for field in state_type._fields}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise bad(f"fields missing {missing}, unexpected {extra}")
    states = [
        state_type(*(tensors[f"{k}.{field}"] for field in state_type._fields))
        for k in range(layers)
    ]
    _check_fields(states, bad)
    if device is not None:
        states = [s._make(t.to(device) for t in s) for s in states]
    return states[0] if cell else tuple(states)


def _count(value, bad) -> int:
    try:
        layers = int(value)
    except (TypeError, ValueError):
        layers = 0
    if layers < 1:
        raise bad(f"number of layers {value!r}, expected a positive integer or 'cell'")
    return layers


def _check_fields(states, bad) -> None:
    """Raise ``bad(message)`` unless the layer states fit together: float (B, n) fields of one
    dtype and batch, sizes of one layer consistent, each layer's inputs the previous layer's
    units, integer re-sync counters, () or (B,)."""
    batch, dtype = None, None
    for k, s in enumerate(states):
        for field, t in zip(s._fields[:-1], s[:-1], strict=True):
            if not t.is_floating_point() or t.dim() != 2:
                raise bad(f"{k}.{field} must be a 2-D float tensor, got {t.dtype} {tuple(t.shape)}")
            batch = t.shape[0] if batch is None else batch
            dtype = t.dtype if dtype is None else dtype
            if t.shape[0] != batch or t.dtype != dtype:
                raise bad(f"{k}.{field} is {t.dtype} with batch {t.shape[0]}, 0.h {dtype} {batch}")
        hidden = s.h.shape[1]
        sizes = {"c": hidden, "h_hat": hidden, "m": 4 * hidden}
        for field, n in sizes.items():
            if field in s._fields and getattr(s, field).shape[1] != n:
                raise bad(f"{k}.{field} has {getattr(s, field).shape[1]} columns, expected {n}")
        if k and s.x_hat.shape[1] != states[k - 1].h.shape[1]:
            raise bad(
                f"{k}.x_hat has {s.x_hat.shape[1]} columns, layer {k - 1} has "
                f"{states[k - 1].h.shape[1]} units"
            )
        since = s.since_sync
        if since.dtype.is_floating_point or since.shape not in ((), (batch,)):
            raise bad(f"{k}.since_sync must be integer, () or ({batch},), got {tuple(since.shape)}")
