"""A module's whole layer stack run one frame per call: :class:`Streamer`.

Shape legend: B batch, I ``input_size``, H ``hidden_size``, L ``num_layers``.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from ..errors import ConfigError, DTypeError, ShapeError, StaleError
from ..functional import RESYNC_EVERY, DeltaCounts
from ..ops import LayerParams, select_streamer_backend
from . import numerics as N
from . import validate as V
from .watch import TensorWatch


class Streamer:
    """Every layer of a :class:`~deltarnn.DeltaGRU` / :class:`~deltarnn.DeltaLSTM` (or a cell)
    advanced one frame per :meth:`step`, for a live signal: built by ``module.streamer()``.

    One step equals ``module.stream(frame[None], state)`` (T = 1) with the state carried, to
    float rounding. The weights and thresholds are read once, when the streamer is built (the
    backend keeps its own packed copy); if a parameter or threshold of the module is replaced or
    modified afterwards (or transforms are installed), :meth:`step` raises
    :class:`StaleError` instead of running on the old copy: build a new streamer.

    That check reads a data pointer and a version counter of every parameter and threshold at
    every step (about 0.2 µs each on a CPU). The streamer holds its module weakly: once the
    module is gone (deployed: load the model, build its streamer, drop the model), nothing can
    replace its tensors, the streamer stops holding them (their memory is freed with their last
    other reference) and watches only those that something else still holds (an optimizer, a
    variable) for writes, until they are freed too; then a step checks nothing. (Writes through
    another tensor that shares their memory, such as a view or a ``state_dict`` entry, are not
    seen once the tensor itself is freed.)

    On the CPU (float32/float64, numba installed) the whole stack is one compiled call per frame
    with no allocation but the returned tensor (:mod:`deltarnn.ops.cpu_stream`); elsewhere the
    backend that ``select_streamer_backend`` picks, at worst the reference (the spec).

    Args:
        module: the delta module (eval mode when it has dropout between layers).
        batch_size: B, the number of streams advanced together.
        state: the state to start from (a module's per-layer tuple, or a cell's layer state);
            ``None`` starts a fresh stream.
        weights: ``"float32"`` (the parameters' dtype) or ``"int8"`` (8-bit weights, one scale
            per column, as :func:`deltarnn.ops.cpu.pack_int8`).
        count: keep each step's send counts (:meth:`counts`).
        backend: ``"auto"`` or a backend name (see :mod:`deltarnn.ops`).
        resync_every: period of the dense memory re-sync, steps (0: only the bound rule; see
            :mod:`deltarnn.functional.state`).
        cell: the module is a cell: ``state`` and :meth:`state` are one layer state,
            :meth:`counts` one ``DeltaCounts``, and a frame may be unbatched (I,) when B = 1.

    Example::

        streamer = gru.streamer()
        for frame in microphone:      # frame: (1, I)
            h = streamer.step(frame)  # (1, H), the last layer's h
    """

    def __init__(
        self,
        module,
        batch_size: int = 1,
        state=None,
        *,
        weights: str = "float32",
        count: bool = False,
        backend: str = "auto",
        resync_every: int = RESYNC_EVERY,
        cell: bool = False,
    ) -> None:
        V.check_positive_int(batch_size, "batch_size")
        V.check_backend(backend)
        if module.transforms != (None, None):
            raise ConfigError(
                "a streamer runs the layers without training transforms; remove them with "
                "module.set_transforms() (or run module.stream, which applies them)"
            )
        if module.training and module.dropout and module.num_layers > 1:
            raise ConfigError(
                "a streamer runs inference, but the module is in training mode with dropout "
                "between layers; call module.eval() first"
            )
        V.check_parameters(module)
        # Held weakly: a streamer does not keep its module (and the module's weights) alive.
        self._module = weakref.ref(module)
        self._state_spec = module._state_spec()
        self._cell = cell
        self._io_dtype = module._like.dtype
        self._dtype = module._compute_dtype
        self._watch = TensorWatch(
            [src for k in range(module.num_layers) for src in module._layer_sources(k, True)]
        )
        with torch.no_grad():
            layers = []
            for k in range(module.num_layers):
                params = [None if w is None else w.detach() for w in module.layer_weights(k)]
                params += [t.detach() for t in module.thresholds(k)]
                layers.append(
                    LayerParams(*(None if t is None else t.to(self._dtype) for t in params))
                )
            self._initial = module.initial_state(batch_size)
        if state is None:
            state = self._initial
        elif self._cell:
            state = (state,)
        module._check_state(state, batch_size)
        state = N.cast_state(tuple(state), self._dtype)
        device = module._like.device
        backend_module = select_streamer_backend(backend, device, self._dtype)
        self.backend = backend_module.NAME
        options = {}
        if self.backend == "cpu" and weights == "float32":
            # the module's own packed copy, shared (one copy of the weights for both)
            with torch.no_grad():
                options["packed"] = [
                    module._packed_weights(k, backend_module) for k in range(module.num_layers)
                ]
        self._engine = backend_module.StackStreamer(
            module.mode, layers, state, count=count, weights=weights, resync_every=resync_every,
            **options,
        )  # fmt: skip
        self._batch = batch_size
        self._inputs = module.input_size
        self._cast = self._io_dtype != self._dtype
        self._steps = 0

    @property
    def batch_size(self) -> int:
        return self._batch

    @property
    def steps(self) -> int:
        """Frames stepped since the streamer was built or last :meth:`reset`."""
        return self._steps

    def step(self, frame: Tensor, out: Tensor | None = None) -> Tensor:
        """Advance every layer by one frame.

        Args:
            frame: (B, I) of the module's dtype and device; a cell's streamer with B = 1 also
                takes (I,).
            out: optional (B, H) tensor to write the result into (then returned).

        Returns:
            The last layer's h, (B, H) (or (H,) for an (I,) frame): a fresh tensor, or ``out``.
        """
        module = self._module()
        if module is not None:
            if self._watch.changed() or module._x_transform is not None or module._h_transform:
                raise self._stale()
        elif self._watch is not None:
            self._watch_released()
        unbatched = self._cell and isinstance(frame, Tensor) and frame.dim() == 1
        if unbatched:
            if self._batch != 1:
                raise ShapeError(
                    f"an unbatched frame (I,) needs a streamer of batch_size=1, this one has "
                    f"{self._batch}; pass frames of shape ({self._batch}, {self._inputs})"
                )
            frame = frame[None]
            if out is not None:
                out = out[None]
        if self._cast:  # deterministic mode: float32 in and out, float64 inside
            if not isinstance(frame, Tensor) or frame.dtype != self._io_dtype:
                raise DTypeError(
                    f"frame must be a tensor of {self._io_dtype}, got "
                    f"{getattr(frame, 'dtype', type(frame).__name__)}"
                )
            h = self._engine.step(frame.to(self._dtype)).to(self._io_dtype)
            if out is not None:
                out.copy_(h)
                h = out
        else:
            h = self._engine.step(frame, out)
        self._steps += 1
        return h[0] if unbatched else h

    def _watch_released(self) -> None:
        """The module is gone: from now on only its tensors that are still alive are watched
        (held weakly), and nothing once they are all freed."""
        if self._watch.changed():  # a change made before the module went
            raise self._stale()
        watch = self._watch
        if isinstance(watch, TensorWatch):
            watch = watch.released()  # drops the strong references: the weights can be freed
        self._watch = None if watch.idle else watch

    def _stale(self) -> StaleError:
        return StaleError(
            "the module's parameters, thresholds or transforms changed after this streamer was "
            "built (it holds a copy of them); build a new one with module.streamer(state="
            "streamer.state())"
        )

    def state(self):
        """The state after the last step (copies): a module's per-layer tuple, resumable with
        ``module.stream`` or ``module.streamer(state=...)``; a cell's layer state."""
        state = self._engine.state()
        return state[0] if self._cell else state

    def reset(self, state=None, *, streams=None) -> None:
        """Start over: from a fresh stream (``None``: x̂ = ĥ = 0, memories at the biases the
        streamer was built with), or from ``state`` (as ``module.streamer`` takes it).

        Args:
            state: the state to start from; ``None``: a fresh stream.
            streams: start over only these rows of the batch (an int or a sequence of ints in
                [0, B), each once), for a server whose B slots serve streams that begin and end
                apart: the other rows go on from where they are. ``state`` then holds one row
                per index, in their order (batch ``len(streams)``; a saved stream resumed in a
                slot). :attr:`steps` goes on counting.
        """
        if streams is not None:
            self._reset_rows(state, streams)
            return
        if state is None:
            state = self._initial
        elif self._cell:
            state = (state,)
        self._state_spec.check(state, self._batch)
        self._engine.load_state(N.cast_state(tuple(state), self._dtype))
        self._steps = 0

    def _reset_rows(self, state, streams) -> None:
        rows = _row_indices(streams, self._batch)
        if state is None:
            source = tuple(s._make(_take_rows(t, rows) for t in s) for s in self._initial)
        else:
            source = (state,) if self._cell else state
            self._state_spec.check(source, len(rows))
        source = N.cast_state(tuple(source), self._dtype)
        merged = []
        for current, given in zip(self._engine.state(), source, strict=True):
            fields = (
                _put_rows(c, g, rows, self._batch) for c, g in zip(current, given, strict=True)
            )
            merged.append(current._make(fields))
        self._engine.load_state(tuple(merged))

    def counts(self) -> list[DeltaCounts] | DeltaCounts:
        """The last step's send counts (T = 1): one :class:`~deltarnn.functional.DeltaCounts` per
        layer (a cell's: one); needs ``count=True``."""
        counts = self._engine.counts()
        return counts[0] if self._cell else counts


def _row_indices(streams, batch: int) -> Tensor:
    """``streams`` of :meth:`Streamer.reset` as an index tensor, checked."""
    if isinstance(streams, Tensor):
        if streams.dim() > 1 or streams.dtype.is_floating_point or streams.dtype == torch.bool:
            raise ShapeError(
                f"streams must be an int or a 1-D sequence of ints, got a {streams.dtype} tensor "
                f"of shape {tuple(streams.shape)}"
            )
        streams = streams.reshape(-1).tolist()
    elif isinstance(streams, int) and not isinstance(streams, bool):
        streams = [streams]
    elif isinstance(streams, (str, bytes)) or not hasattr(streams, "__iter__"):
        raise ShapeError(f"streams must be an int or a sequence of ints, got {streams!r}")
    rows = list(streams)
    for i in rows:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < batch:
            raise ShapeError(f"streams holds {i!r}: each must be an int in [0, {batch})")
    if len(set(rows)) != len(rows):
        raise ShapeError(f"streams names a row twice: {rows}")
    return torch.tensor(rows, dtype=torch.long)


def _take_rows(field: Tensor, rows: Tensor) -> Tensor:
    """The rows of a state field (a 0-d counter, shared by every row, as it is)."""
    return field if field.dim() == 0 else field[rows]


def _put_rows(current: Tensor, given: Tensor, rows: Tensor, batch: int) -> Tensor:
    """``current`` (a copy, written here) with ``rows`` from ``given``; a 0-d counter (no steps
    counted, every row) becomes one per row when the other side has one per row."""
    if current.dim() == 0 and given.dim() == 0:
        return current
    out = current.expand(batch).clone() if current.dim() == 0 else current
    out[rows] = given
    return out
