"""Delta GRU and delta LSTM modules: drop-in replacements for ``torch.nn.GRU`` / ``LSTM``.

Shape legend: T time steps, B batch, I ``input_size``, H ``hidden_size``, L ``num_layers``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .. import functional as F
from ..errors import ConfigError, DTypeError, ShapeError
from ..functional import DeltaCounts, DeltaGRUState, DeltaLSTMState
from ..ops import select_backend
from . import capture
from . import numerics as N
from . import validate as V
from .call_plan import PlanCache, planned_call
from .packed import forward_packed
from .streamer import Streamer
from .watch import TensorWatch

log = logging.getLogger(__name__)

LayerState = DeltaGRUState | DeltaLSTMState
DeltaRNNState = tuple[LayerState, ...]
# A transform of the values a layer's products see: (value, layer index) -> value of that shape.
LayerTransform = Callable[[Tensor, int], Tensor]


class ThresholdAttribute:
    """``module.theta_x`` / ``theta_h``: the stored thresholds of each layer, shape () or
    (features,), as a tuple (a cell's: one tensor); assigning one calls ``set_thresholds``."""

    def __init__(self, kind: str, single: bool = False) -> None:
        self.kind, self.single = kind, single

    def __get__(self, module, owner=None):
        if module is None:
            return self
        stored = module._stored(self.kind)
        return stored[0] if self.single else stored

    def __set__(self, module, value: V.ThetaArg) -> None:
        module.set_thresholds(**{f"theta_{self.kind}": value})


class _DeltaRNNBase(capture.CaptureGuards, nn.Module):
    """Shared machinery of :class:`DeltaGRU` and :class:`DeltaLSTM` (``mode`` "GRU" or "LSTM")."""

    mode: str = ""
    gates: int = 0

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        theta_x: V.ThetaArg = 0.0,
        theta_h: V.ThetaArg = 0.0,
        backend: str = "auto",
        deterministic: bool = False,
    ) -> None:
        super().__init__()
        if bidirectional:
            raise ConfigError(
                "bidirectional=True is not supported: a delta network runs on a causal stream, "
                "where the future is not known"
            )
        if proj_size:
            raise ConfigError(
                f"proj_size must be 0 (projections are not supported), got {proj_size!r}"
            )
        V.check_sizes(input_size, hidden_size, num_layers, dropout)
        V.check_backend(backend)
        if not isinstance(batch_first, bool) or not isinstance(bias, bool):
            raise ConfigError("batch_first and bias must be bools")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = False
        self.proj_size = 0
        self.backend = backend
        if not isinstance(deterministic, bool):
            raise ConfigError(f"deterministic must be a bool, got {deterministic!r}")
        # float32 weights and I/O, float64 state and accumulation (see deltarnn.nn.numerics)
        self.deterministic = deterministic
        self.last_backend: str | None = None
        self._x_transform: LayerTransform | None = None
        self._h_transform: LayerTransform | None = None
        # Per layer: (backend name, watch of the layer's parameters, packed weights).
        self._packed: dict[int, tuple[str, TensorWatch, object]] = {}
        # Per batch size: what repeated one-frame calls reuse (see nn/call_plan.py).
        self._plans = PlanCache()
        factory = {"device": device, "dtype": dtype}
        rows = self.gates * hidden_size
        for k in range(num_layers):
            layer_in = input_size if k == 0 else hidden_size
            shapes = {"weight_ih": (rows, layer_in), "weight_hh": (rows, hidden_size)}
            if bias:
                shapes.update(bias_ih=(rows,), bias_hh=(rows,))
            for name, shape in shapes.items():
                # Normal tensors even inside torch.inference_mode(): inference tensors keep no
                # version counter, so the caches of packed weights could not notice a write.
                with torch.inference_mode(False):
                    param = nn.Parameter(torch.empty(shape, **factory))
                self.register_parameter(self._param_name(name, k), param)
        self.reset_parameters()
        self.set_thresholds(theta_x, theta_h)

    # -- parameters and thresholds -------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)), as ``torch.nn.GRU``/``LSTM``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_sizes(self, k: int) -> tuple[int, int]:
        """(input features, hidden units) of layer k."""
        return (self.input_size if k == 0 else self.hidden_size), self.hidden_size

    @staticmethod
    def _param_name(name: str, k: int) -> str:
        """torch's parameter name for layer k (cells override this: they have one layer, no suffix)."""
        return f"{name}_l{k}"

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer k; biases are None without bias."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(getattr(self, self._param_name(name, k), None) for name in names)

    def _layer_sources(self, k: int, thresholds: bool = False) -> list[tuple[dict, str]]:
        """Where layer k's parameters (and thresholds) live, for a :class:`TensorWatch`."""
        names = [self._param_name(n, k) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if thresholds:
            names += [f"theta_x_l{k}", f"theta_h_l{k}"]
        sources = []
        for name in names:
            for mapping in (self._parameters, self._buffers):
                if mapping.get(name) is not None:
                    sources.append((mapping, name))
        return sources

    @property
    def _compute_dtype(self) -> torch.dtype:
        """The dtype of the layers' arithmetic and of the stream state."""
        return N.compute_dtype(self._like.dtype, self.deterministic)

    @property
    def _like(self) -> Tensor:
        """The parameter whose dtype and device every input must share."""
        return self.layer_weights(0)[0]

    def set_thresholds(
        self, theta_x: V.ThetaArg | None = None, theta_h: V.ThetaArg | None = None
    ) -> None:
        """Set Θx and/or Θh: a float or a per-feature tensor for all layers, or a list per layer.

        Layer k's Θx applies to its input, i.e. to layer k-1's output for k > 0.
        """
        like = self._like
        for arg, kind in ((theta_x, "x"), (theta_h, "h")):
            if arg is None:
                continue
            for k, value in enumerate(V.per_layer(arg, f"theta_{kind}", self.num_layers)):
                features = self.layer_sizes(k)[0 if kind == "x" else 1]
                tensor = V.threshold_tensor(value, f"theta_{kind}", features, like)
                self._store_threshold(f"theta_{kind}_l{k}", tensor)

    def _store_threshold(self, name: str, tensor: Tensor) -> None:
        current = getattr(self, name, None)
        if isinstance(current, nn.Parameter):
            with torch.no_grad():  # learnable thresholds stay parameters
                current.copy_(tensor.expand_as(current))
        else:
            if tensor.is_inference():  # a normal tensor, with a version counter (see __init__)
                with torch.inference_mode(False):
                    tensor = tensor.clone()
            self.register_buffer(name, tensor)

    def set_transforms(
        self, x_transform: LayerTransform | None = None, h_transform: LayerTransform | None = None
    ) -> None:
        """Install (or, with ``None``, remove) transforms of the values the products see.

        Training methods (:mod:`deltarnn.train`: fixed-point rounding, noise, learnable
        thresholds) act through these. ``x_transform(x, k)`` receives layer k's whole input
        sequence (T, B, I_k) before it is delta-encoded; ``h_transform(h, k)`` receives
        h_{t-1} (B, H) of layer k at every step before it is delta-encoded (the state h itself is
        unchanged). Both return a tensor of the same shape. The layer index is passed explicitly,
        so per-layer transforms need no call counting. Transforms run on the reference backend
        (``backend="auto"`` picks it; a named fast backend is refused).
        """
        self._x_transform, self._h_transform = x_transform, h_transform

    @property
    def transforms(self) -> tuple[LayerTransform | None, LayerTransform | None]:
        """The installed ``(x_transform, h_transform)`` (see :meth:`set_transforms`)."""
        return self._x_transform, self._h_transform

    def _stored(self, kind: str) -> tuple[Tensor, ...]:
        return tuple(getattr(self, f"theta_{kind}_l{k}") for k in range(self.num_layers))

    theta_x = ThresholdAttribute("x")
    theta_h = ThresholdAttribute("h")

    def thresholds(self, k: int) -> tuple[Tensor, Tensor]:
        """Θx and Θh of layer k, expanded to shapes (I_k,) and (H,)."""
        features, hidden = self.layer_sizes(k)
        return (
            getattr(self, f"theta_x_l{k}").expand(features),
            getattr(self, f"theta_h_l{k}").expand(hidden),
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A torch.nn.GRU/LSTM state_dict has no thresholds: it loads as is and keeps the module's.
        # A state_dict with only some thresholds is still reported as missing keys.
        # Thresholds are validated and take the checkpoint's shape (scalar or per feature).
        for name, tensor in V.checked_thresholds(self, state_dict, prefix).items():
            self._store_threshold(name, tensor)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        theta_keys = [
            prefix + f"theta_{kind}_l{k}" for k in range(self.num_layers) for kind in "xh"
        ]
        if not any(key in state_dict for key in theta_keys):
            missing_keys[:] = [key for key in missing_keys if key not in theta_keys]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``torch.nn.Module.load_state_dict``; a strict load with missing or unexpected keys
        raises :class:`~deltarnn.errors.CheckpointError` listing them."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            V.check_state_dict_keys(self, result.missing_keys, result.unexpected_keys)
        return result

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        s += f", theta_x={_theta_repr(self._stored('x'))}, theta_h={_theta_repr(self._stored('h'))}"
        if self.deterministic:
            s += ", deterministic=True"
        return s + f", backend={self.backend!r}"

    # -- state ---------------------------------------------------------------------------------

    def initial_state(
        self, batch_size: int, h0: Tensor | None = None, c0: Tensor | None = None
    ) -> DeltaRNNState:
        """A fresh stream for ``batch_size`` sequences: x̂ = ĥ = 0, memories at the biases.

        Args:
            h0, c0: optional initial hidden (and cell) state, shape (L, B, H).
        """
        states = []
        for k in range(self.num_layers):
            w_ih, _, b_ih, b_hh = self.layer_weights(k)
            h = None if h0 is None else h0[k]
            if self.mode == "GRU":
                states.append(F.gru_initial_state(w_ih, b_ih, b_hh, batch_size, h))
            else:
                c = None if c0 is None else c0[k]
                states.append(F.lstm_initial_state(w_ih, b_ih, b_hh, batch_size, h, c))
        return N.cast_state(tuple(states), self._compute_dtype)

    def _check_state(self, state: DeltaRNNState, batch: int) -> None:
        like = self._like  # (no new tensor: a captured graph would record one per call)
        self._state_spec(like if like.dtype == self._compute_dtype else None).check(state, batch)

    def _state_spec(self, like: Tensor | None = None) -> StateSpec:
        """The rules of this module's states. Without ``like`` it holds no tensor of the
        module's (a streamer keeps it after the module is gone)."""
        if like is None:
            # the state is held in the dtype the layers compute in (float64 when deterministic)
            like = self._like.new_empty(0, dtype=self._compute_dtype)
        sizes = tuple(self.layer_sizes(k) for k in range(self.num_layers))
        return StateSpec(self.mode, sizes, like)

    # -- running -------------------------------------------------------------------------------

    def _packed_weights(self, k: int, backend) -> object:
        weights = self.layer_weights(k)
        dtype = self._compute_dtype  # .to() of the same dtype is the tensor itself
        if getattr(backend, "DIFFERENTIABLE", False) or getattr(backend, "LIVE_WEIGHTS", False):
            # live parameters: autograd or a graph needs them
            return backend.pack(*(None if w is None else N.as_dtype(w, dtype) for w in weights))
        cached = self._packed.get(k)
        key = (backend.NAME, dtype)
        if any(w is not None and w.is_inference() for w in weights):
            # no version counter to notice an in-place write by: packed at every call
            return backend.pack(*(None if w is None else w.detach().to(dtype) for w in weights))
        if cached is None or cached[0] != key or cached[1].changed():
            # The watch is taken before packing, so a change during packing is seen next call.
            watch = TensorWatch(self._layer_sources(k))
            packed = backend.pack(*(None if w is None else w.detach().to(dtype) for w in weights))
            cached = (key, watch, packed)
            self._packed[k] = cached
        return cached[2]

    def _choose_backend(self, x: Tensor):
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        transformed = self._x_transform is not None or self._h_transform is not None
        if transformed and self.backend not in ("auto", "reference"):
            raise ConfigError(
                f"backend={self.backend!r} cannot apply training transforms; use 'reference' or 'auto'"
            )
        kind = capture.capture_kind()
        if kind is not None:  # torch.compile / export / jit.trace / ONNX: see nn/capture.py
            return capture.captured_backend(self, kind, x.device, needs_grad, transformed)
        name = "reference" if transformed else self.backend
        return select_backend(name, x.device, x.dtype, needs_grad)

    def _run(
        self, x: Tensor, state: DeltaRNNState, count: bool
    ) -> tuple[Tensor, DeltaRNNState, list[DeltaCounts] | None]:
        """All layers over x (T, B, I) from ``state``; the core every public entry point calls."""
        V.check_parameters(self)
        io_dtype = x.dtype
        x = N.as_dtype(x, self._compute_dtype)
        state = N.cast_state(state, self._compute_dtype)  # exact: float32 fits in float64
        backend = self._choose_backend(x)
        self.last_backend = backend.NAME
        run_layer = backend.gru if self.mode == "GRU" else backend.lstm
        new_states, counts = [], []
        for k in range(self.num_layers):
            if k > 0 and self.dropout and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            if self._x_transform is not None:
                x = self._x_transform(x, k)
            theta_x, theta_h = (N.as_dtype(t, x.dtype) for t in self.thresholds(k))
            packed = self._packed_weights(k, backend)
            # Only the reference backend takes h_transform (_choose_backend made sure of it).
            extra = {}
            if self._h_transform is not None:
                extra["h_transform"] = lambda h, k=k, f=self._h_transform: f(h, k)
            x, s, c = run_layer(x, state[k], packed, theta_x, theta_h, count=count, **extra)
            new_states.append(s)
            counts.append(c)
        return N.as_dtype(x, io_dtype), tuple(new_states), (counts if count else None)

    def stream(
        self, input: Tensor, state: DeltaRNNState | None = None, *, count: bool = False
    ) -> tuple[Tensor, DeltaRNNState] | tuple[Tensor, DeltaRNNState, list[DeltaCounts]]:
        """Run a chunk of a stream from an explicit state and return the state after it.

        Feeding a sequence in chunks gives the same outputs and final state as one pass.

        Args:
            input: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched (the state
                then has batch size 1).
            state: a tuple of per-layer states from :meth:`initial_state` or a previous call;
                ``None`` starts a fresh stream.
            count: also return each layer's :class:`~deltarnn.functional.DeltaCounts`.

        Returns:
            ``(output, state)`` (plus the counts when ``count``); output has the input's layout.
        """
        planned = self._planned_stream(input, state, count)
        if planned is not None:
            return planned
        x, unbatched = V.check_input(input, self.input_size, self._like, self.batch_first)
        if state is None:
            state = self.initial_state(x.shape[1])
        else:
            self._check_state(state, x.shape[1])
        out, state, counts = self._run(x, state, count)
        out = self._restore_layout(out, unbatched)
        return (out, state, counts) if count else (out, state)

    def _planned_stream(self, input: Tensor, state: DeltaRNNState | None, count: bool):
        """:meth:`stream`'s result for one frame (T = 1) of a stream under way or starting
        (``state=None``) by the module's plan (see :mod:`deltarnn.nn.call_plan`), or ``None`` to
        take the generic path."""
        if not isinstance(input, Tensor):
            return None
        shape = input.shape
        if len(shape) == 2:  # unbatched (1, I)
            batch, frame, out = 1, (1, self.input_size), (1, self.hidden_size)
        elif len(shape) == 3:
            batch = shape[0] if self.batch_first else shape[1]
            frame = (batch, 1, self.input_size) if self.batch_first else (1, batch, self.input_size)
            out = frame[:2] + (self.hidden_size,)
        else:
            return None
        if batch == 0:
            return None
        result = planned_call(self, input, batch, frame, state, count, out)
        if result is None:
            return None
        return result if count else result[:2]

    def streamer(
        self,
        batch_size: int = 1,
        state: DeltaRNNState | None = None,
        *,
        weights: str = "float32",
        count: bool = False,
        backend: str = "auto",
        resync_every: int = F.RESYNC_EVERY,
    ) -> Streamer:
        """A :class:`~deltarnn.Streamer` of every layer, one frame (B, I) per ``step``, for live
        input: on the CPU one compiled call per frame. See :class:`~deltarnn.Streamer` for the
        arguments; ``state`` is a per-layer tuple as :meth:`stream` takes and returns."""
        return Streamer(
            self, batch_size, state, weights=weights, count=count, backend=backend,
            resync_every=resync_every, cell=self._is_cell,
        )  # fmt: skip

    _is_cell = False  # cells take and return one layer's state

    def _restore_layout(self, out: Tensor, unbatched: bool) -> Tensor:
        if unbatched:
            return out.squeeze(1)
        return out.transpose(0, 1) if self.batch_first else out

    def _check_h0(self, h0: Tensor, name: str, batch: int, unbatched: bool) -> Tensor:
        expected = (
            (self.num_layers, self.hidden_size)
            if unbatched
            else (self.num_layers, batch, self.hidden_size)
        )
        V.check_shape(h0, name, expected, self._like)
        return h0.unsqueeze(1) if unbatched else h0


def _theta_repr(per_layer: tuple[Tensor, ...]) -> str:
    """``0.1``; ``[0.1, 0.2]`` per layer; ``<40 values in [0, 0.3]>`` for a per-feature Θ."""

    def one(t: Tensor) -> str:
        values = t.detach().flatten().tolist()
        lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
        if lo == hi:
            return f"{lo:.4g}"
        return f"<{len(values)} values in [{lo:.4g}, {hi:.4g}]>"

    shown = [one(t) for t in per_layer]
    return shown[0] if len(set(shown)) == 1 else "[" + ", ".join(shown) + "]"


class StateSpec(NamedTuple):
    """What a module's per-layer state must be, without the module (a :class:`Streamer`
    checks the states it is given by it, also after its module is gone).

    Attributes:
        mode: ``"GRU"`` or ``"LSTM"``.
        sizes: (input features, hidden units) of each layer.
        like: an empty tensor of the state's dtype (the layers' compute dtype) and device.
    """

    mode: str
    sizes: tuple[tuple[int, int], ...]
    like: Tensor

    def check(self, state: DeltaRNNState, batch: int) -> None:
        """Raise a specific error unless ``state`` is a tuple of one state per layer, batch B."""
        state_type = DeltaGRUState if self.mode == "GRU" else DeltaLSTMState
        if not isinstance(state, (tuple, list)) or len(state) != len(self.sizes):
            raise ShapeError(
                f"state must be a tuple of num_layers={len(self.sizes)} {state_type.__name__}"
            )
        for k, (s, (features, hidden)) in enumerate(zip(state, self.sizes, strict=True)):
            if not isinstance(s, state_type):
                raise ShapeError(
                    f"state[{k}] must be a {state_type.__name__}, got {type(s).__name__}"
                )
            if self.mode == "GRU":  # the widths of the float fields, in field order
                widths = hidden, features, hidden, 4 * hidden
            else:
                widths = hidden, hidden, features, hidden, 4 * hidden
            for field, size in zip(s._fields[: len(widths)], widths, strict=True):
                V.check_shape(getattr(s, field), f"state[{k}].{field}", (batch, size), self.like)
            _check_since_sync(s.since_sync, f"state[{k}].since_sync", batch, self.like.device)


def _check_since_sync(since: Tensor, name: str, batch: int, device: torch.device) -> None:
    """A state's step counter: int64 of shape (B,) on the parameters' device, or 0-d."""
    if not isinstance(since, Tensor) or tuple(since.shape) not in ((batch,), ()):
        raise ShapeError(
            f"{name} must be an int64 tensor of shape ({batch},) or (), got "
            f"{tuple(since.shape) if isinstance(since, Tensor) else type(since).__name__}"
        )
    if since.dtype != torch.int64:
        raise DTypeError(f"{name} must be int64, got {since.dtype}")
    if since.dim() and since.device != device:
        raise DTypeError(f"{name} must be on {device}, got {since.device}")


class DeltaGRU(_DeltaRNNBase):
    r"""A multi-layer delta GRU: ``torch.nn.GRU`` that sends only the changes above a threshold.

    For each layer and step (Neil et al., ICML 2017; docs/equations.rst)::

        Δx_t = x_t - x̂_{t-1} where |x_t - x̂_{t-1}| > Θx, else 0   (x̂ keeps the last value sent)
        Δh_t = h_{t-1} - ĥ_{t-1} where |h_{t-1} - ĥ_{t-1}| > Θh, else 0
        M_r += W_ir Δx + W_hr Δh;  M_z += W_iz Δx + W_hz Δh;  M_xn += W_in Δx;  M_hn += W_hn Δh
        r = σ(M_r);  z = σ(M_z);  n = tanh(M_xn + r ⊙ M_hn);  h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    Memories start at the biases. With Θx = Θh = 0 the output equals ``torch.nn.GRU``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, device, dtype: as in
            ``torch.nn.GRU`` (``bidirectional`` and ``proj_size`` are rejected).
        theta_x: Θx, a float, a per-feature tensor, or a list with one per layer.
        theta_h: Θh, likewise.
        backend: ``"auto"`` (the fastest that supports the call), ``"reference"``, ``"cpu"`` or
            ``"triton"`` or ``"fused"`` (training with a hand-written backward). The one that
            ran last is in :attr:`last_backend`.
        deterministic: run a float32 module in float64 inside (float32 weights, input and
            output; the stream state in float64), so that every backend takes the same send
            decisions; without it float32 backends agree only until one decision differs
            (see :mod:`deltarnn.nn.numerics`).

    Inputs: ``input, h_0``
        input: (T, B, I), (B, T, I) with ``batch_first``, or (T, I) unbatched.
        h_0: (L, B, H) or (L, H) unbatched; zeros by default.

    Outputs: ``output, h_n``
        output: (T, B, H) (or batch first / unbatched like the input). h_n: (L, B, H) or (L, H).

    For streaming with the whole state (x̂, ĥ, memories) use :meth:`stream`.
    """

    mode = "GRU"
    gates = 3

    # count is positional-or-keyword: torch.onnx's legacy exporter passes keyword-only
    # parameters by position
    def forward(
        self, input: Tensor | PackedSequence, hx: Tensor | None = None, count: bool = False
    ) -> tuple[Tensor | PackedSequence, Tensor] | tuple[Tensor | PackedSequence, Tensor, list]:
        """Run all layers over ``input`` from a fresh stream (x̂ = ĥ = 0, memories at the biases).

        Args:
            input: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched; or a
                ``PackedSequence`` of variable-length sequences (padded steps are never run).
            hx: h_0 of every layer, (L, B, H) or (L, H) unbatched; zeros when ``None``.
            count: also return each layer's :class:`~deltarnn.functional.DeltaCounts`, (T, B)
                (zeros at the padded steps of a packed input), for
                :meth:`~deltarnn.CostReport.from_counts`: the cost of this very run.

        Returns:
            ``(output, h_n)``: output (T, B, H) in the input's layout (a ``PackedSequence`` for
            a packed input), h_n (L, B, H) or (L, H), for a packed input at each sequence's
            own last step; ``(output, h_n, counts)`` with ``count``.
        """
        if isinstance(input, PackedSequence):
            return forward_packed(self, input, hx, count)
        x, unbatched = V.check_input(input, self.input_size, self._like, self.batch_first)
        h0 = None if hx is None else self._check_h0(hx, "hx", x.shape[1], unbatched)
        out, state, counts = self._run(x, self.initial_state(x.shape[1], h0), count=count)
        h_n = torch.stack([s.h for s in state])
        result = self._restore_layout(out, unbatched), (h_n.squeeze(1) if unbatched else h_n)
        return (*result, counts) if count else result


class DeltaLSTM(_DeltaRNNBase):
    r"""A multi-layer delta LSTM: ``torch.nn.LSTM`` that sends only the changes above a threshold.

    For each layer and step, with one memory per gate (order i|f|g|o, started at b_ih + b_hh)::

        M += W_ih Δx + W_hh Δh
        i = σ(M_i);  f = σ(M_f);  g = tanh(M_g);  o = σ(M_o)
        c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)

    Δx and Δh are as in :class:`DeltaGRU`. Arguments are those of :class:`DeltaGRU`.

    Inputs: ``input, (h_0, c_0)``; outputs: ``output, (h_n, c_n)``, shaped as in ``torch.nn.LSTM``.
    """

    mode = "LSTM"
    gates = 4

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: tuple[Tensor, Tensor] | None = None,
        count: bool = False,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]] | tuple:
        """Run all layers over ``input`` from a fresh stream (x̂ = ĥ = 0, memories at the biases).

        Args:
            input: as for :meth:`DeltaGRU.forward`, a ``PackedSequence`` included.
            hx: ``(h_0, c_0)``, each (L, B, H) or (L, H) unbatched; zeros when ``None``.
            count: as for :meth:`DeltaGRU.forward`.

        Returns:
            ``(output, (h_n, c_n))``: output (T, B, H) in the input's layout (or packed), h_n
            and c_n (L, B, H) or (L, H), at each sequence's own last step for a packed input;
            ``(output, (h_n, c_n), counts)`` with ``count``.
        """
        if isinstance(input, PackedSequence):
            return forward_packed(self, input, hx, count)
        x, unbatched = V.check_input(input, self.input_size, self._like, self.batch_first)
        h0 = c0 = None
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ShapeError("hx must be a tuple (h_0, c_0) for an LSTM")
            h0 = self._check_h0(hx[0], "h_0", x.shape[1], unbatched)
            c0 = self._check_h0(hx[1], "c_0", x.shape[1], unbatched)
        out, state, counts = self._run(x, self.initial_state(x.shape[1], h0, c0), count=count)
        h_n = torch.stack([s.h for s in state])
        c_n = torch.stack([s.c for s in state])
        if unbatched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        result = self._restore_layout(out, unbatched), (h_n, c_n)
        return (*result, counts) if count else result
