"""The delta layers as ``torch.library`` operators, so that graph capture records a layer whole.

``torch.compile``, ``torch.export`` and ``torch.jit.trace`` cannot see inside a numba or Triton
kernel: traced through Python they crash, or they record the example input's numbers as
constants. Registered as operators, a layer is one node of the captured graph, with a fake
(meta) kernel that gives the output shapes from the input shapes, so the graph stays correct for
any sequence length and batch.

Shape legend: T time steps, B batch, I input features, H hidden units, G gates (3 GRU, 4 LSTM).

The operators (``torch.ops.deltarnn.gru_layer`` / ``lstm_layer``)::

    gru_layer(Tensor x, Tensor h, Tensor x_hat, Tensor h_hat, Tensor m, Tensor since_sync,
              Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh,
              Tensor theta_x, Tensor theta_h, bool count, int resync_every)
        -> (Tensor output, Tensor h, Tensor x_hat, Tensor h_hat, Tensor m, Tensor since_sync,
            Tensor nx, Tensor nh, Tensor ux, Tensor uh, Tensor abs_x, Tensor abs_h)
    lstm_layer(Tensor x, Tensor h, Tensor c, Tensor x_hat, Tensor h_hat, Tensor m, ...)
        -> (Tensor output, Tensor h, Tensor c, Tensor x_hat, Tensor h_hat, Tensor m, ...)

The contract is :func:`deltarnn.functional.delta_gru` / ``delta_lstm``: x (T, B, I); the state's
tensors as in :class:`~deltarnn.functional.DeltaGRUState` (h, x_hat, h_hat (B, ·), m (B, 4H),
since_sync (B,) or ()); weights in torch's layout, (G*H, I) and (G*H, H), biases (G*H,) or
``None`` (the memory re-sync needs them); thresholds 1-D, (I,) and (H,); ``resync_every`` the
re-sync period (0: only the bound rule, and since_sync is returned as given, copied; > 0: a (B,)
counter is returned). It returns the output (T, B, H), the state after the last step and the
fields of
:class:`~deltarnn.functional.DeltaCounts` when ``count`` (nx, nh (T, B) and ux, uh (T,) int64;
abs_x, abs_h (T, B) of x's dtype), else the same with T = 0. Every output is a new tensor;
the inputs are not modified.

Kernels:

* every device (``CompositeExplicitAutograd``): the functional spec, without autograd;
* ``cpu``: the numba engine (:mod:`deltarnn.ops.cpu`) for float32/float64 when numba is
  installed, with the packed weights cached until a weight changes; the spec otherwise;
* fake: shapes only, for tracing;
* autograd: none, on purpose. A backward through the operator raises
  :class:`~deltarnn.errors.BackendError` (train with the ``reference`` or ``fused`` backends,
  which capture as plain PyTorch).

How a backend adds its kernel for a device type: register a function taking the schema's
arguments in order and returning the schema's outputs as new tensors (never an input or a view
of one) with the standard API, when its module is imported (:func:`split_args` and
:func:`results` do the argument and output plumbing)::

    torch.library.register_kernel("deltarnn::gru_layer", "cuda", my_gru_kernel)
    torch.library.register_kernel("deltarnn::lstm_layer", "cuda", my_lstm_kernel)

and name that module in :data:`KERNEL_MODULES`: the first time an operator runs on that device
type the module is imported, and from then on its kernel runs. Until then, or where its import
fails, the spec runs. Tests compare each kernel with the spec, like any backend.

This module also has the backend surface of :mod:`deltarnn.ops` (``NAME``, ``pack``, ``gru``,
``lstm``), which the modules use while a graph is being captured (see
:mod:`deltarnn.nn.capture`); it is not one of the backends a user selects.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor

from .. import functional as F
from ..errors import BackendError
from ..functional.state import DeltaCounts, DeltaGRUState, DeltaLSTMState
from . import reference

log = logging.getLogger(__name__)

NAME = "custom_op"
# Modules must pass the live weights (a graph input, or a FakeTensor while tracing), not a packed
# copy: the operator's kernels do their own packing and caching.
LIVE_WEIGHTS = True

NAMESPACE = "deltarnn"
# Device type -> module that registers that device's kernels when imported (see the docstring).
KERNEL_MODULES: dict[str, str] = {"cuda": "deltarnn.ops.triton"}
_DISPATCH_KEYS = {"cuda": "CUDA", "xpu": "XPU", "mps": "MPS"}


class _Layer(NamedTuple):
    """What differs between the GRU and the LSTM operator."""

    name: str
    state_type: type
    spec: object  # functional.delta_gru / delta_lstm


LAYERS = {
    "GRU": _Layer("gru_layer", DeltaGRUState, F.delta_gru),
    "LSTM": _Layer("lstm_layer", DeltaLSTMState, F.delta_lstm),
}


def _schema(layer: _Layer) -> str:
    state = ", ".join(f"Tensor {f}" for f in layer.state_type._fields)
    state_out = ", ".join(f"Tensor {f}_n" for f in layer.state_type._fields)
    return (
        f"{layer.name}(Tensor x, {state}, Tensor weight_ih, Tensor weight_hh, "
        "Tensor? bias_ih, Tensor? bias_hh, Tensor theta_x, Tensor theta_h, bool count, "
        f"int resync_every) -> (Tensor output, {state_out}, Tensor nx, Tensor nh, Tensor ux, "
        "Tensor uh, Tensor abs_x, Tensor abs_h)"
    )


class LayerCall(NamedTuple):
    """The arguments of one operator call, named (see the module docstring)."""

    x: Tensor
    state: DeltaGRUState | DeltaLSTMState
    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None
    bias_hh: Tensor | None
    theta_x: Tensor
    theta_h: Tensor
    count: bool
    resync_every: int

    def spec(self, kind: str):
        """The functional spec on these arguments: ``(output, state, counts)``, no autograd."""
        with torch.no_grad():
            return LAYERS[kind].spec(
                self.x, self.state, self.weight_ih, self.weight_hh, self.theta_x, self.theta_h,
                bias_ih=self.bias_ih, bias_hh=self.bias_hh, resync_every=self.resync_every,
                count=self.count,
            )  # fmt: skip


def split_args(kind: str, args: tuple) -> LayerCall:
    """The operator's positional arguments (schema order) as a :class:`LayerCall`."""
    state_type = LAYERS[kind].state_type
    fields = len(state_type._fields)
    return LayerCall(args[0], state_type(*args[1 : 1 + fields]), *args[1 + fields :])


def results(call: LayerCall, out: Tensor, state, counts: DeltaCounts | None) -> tuple[Tensor, ...]:
    """The schema's outputs from a layer's ``(output, state, counts)``.

    A state tensor that is one of the inputs (a backend may hand one back unchanged, e.g.
    ``since_sync`` with ``resync_every=0`` or any field at T = 0) is copied, and with
    ``resync_every > 0`` a 0-d ``since_sync`` becomes (B,), as the fake kernel promises; counts
    are empty (T = 0) without ``count``.
    """
    given = {id(t) for t in call.state}
    fields = [t.clone() if id(t) in given else t for t in state]
    batch = call.x.shape[1]
    if call.resync_every > 0 and fields[-1].dim() == 0:
        fields[-1] = fields[-1].expand(batch).clone()
    if counts is None:
        long = {"dtype": torch.int64, "device": call.x.device}
        nothing = (
            torch.empty(0, batch, **long), torch.empty(0, batch, **long),
            torch.empty(0, **long), torch.empty(0, **long),
            call.x.new_empty(0, batch), call.x.new_empty(0, batch),
        )  # fmt: skip
        return (out, *fields, *nothing)
    nx, nh, ux, uh, abs_x, abs_h = counts
    return (out, *fields, nx, nh, ux, uh, abs_x.to(call.x.dtype), abs_h.to(call.x.dtype))


# -- kernels ---------------------------------------------------------------------------------


def _spec_kernel(kind: str, args: tuple) -> tuple[Tensor, ...]:
    """The functional spec."""
    call = split_args(kind, args)
    return results(call, *call.spec(kind))


def _default_kernel(kind: str):
    """Every device without a kernel of its own: load the device's backend once, else the spec."""
    layer = LAYERS[kind]

    def kernel(*args):
        device_type = args[0].device.type
        if _load_kernel_module(device_type, layer):
            return getattr(torch.ops.deltarnn, layer.name).default(*args)
        return _spec_kernel(kind, args)

    return kernel


_TRIED: set[str] = set()


def _load_kernel_module(device_type: str, layer: _Layer) -> bool:
    """Import the module of :data:`KERNEL_MODULES` for ``device_type`` (once); True if it
    registered a kernel for ``layer`` on that device."""
    module = KERNEL_MODULES.get(device_type)
    key = _DISPATCH_KEYS.get(device_type)
    if module is None or key is None:
        return False
    if device_type not in _TRIED:
        _TRIED.add(device_type)
        try:
            importlib.import_module(module)
        except ImportError as exc:  # optional dependency missing: the spec runs
            log.debug("no %s kernel for the delta operators: %s", device_type, exc)
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{layer.name}", key)


def _cpu_kernel(kind: str):
    def kernel(*args):
        from . import cpu  # here, not at import: numba is imported only when a layer runs

        call = split_args(kind, args)
        if not cpu.is_available() or not cpu.supports(call.x.device, call.x.dtype, False):
            return _spec_kernel(kind, args)
        weights = (call.weight_ih, call.weight_hh, call.bias_ih, call.bias_hh)
        layer = _CALLS.get(cpu, kind, _PACKED.get(weights, cpu.pack), call)
        out, state, counts = layer.run(layer.input_array(call.x), call.state, call.count)
        return results(call, torch.from_numpy(out), state, counts)

    return kernel


def _fake_kernel(kind: str):
    def kernel(*args):
        call = split_args(kind, args)
        x, state = call.x, call.state
        steps, batch = x.shape[0], x.shape[1]
        out = x.new_empty((steps, batch, call.weight_hh.shape[1]))
        new_state = [t.new_empty(t.shape) for t in state]
        if call.resync_every > 0:
            new_state[-1] = state[-1].new_empty((batch,))
        n = steps if call.count else 0
        per_sample = [x.new_empty((n, batch), dtype=torch.int64) for _ in range(2)]
        union = [x.new_empty((n,), dtype=torch.int64) for _ in range(2)]
        sums = [x.new_empty((n, batch)) for _ in range(2)]
        return (out, *new_state, *per_sample, *union, *sums)

    return kernel


def _no_backward(layer: _Layer):
    def backward(ctx, *grads):
        raise BackendError(
            f"{NAMESPACE}::{layer.name} has no gradient: it is the inference kernel. Train with "
            "backend='reference' or 'fused' (they capture as plain PyTorch), or export/compile "
            "under torch.no_grad()"
        )

    return backward


# -- packed weights --------------------------------------------------------------------------


class _PackedCache:
    """Packed weights per tuple of a layer's tensors, served only while none of them changed.

    An entry is keyed by the tensors' identities (held by weak references, so a freed tensor
    whose id is reused is never matched) and stamped with their data pointers and version
    counters: an in-place update (``copy_``, ``resize_``, an optimizer step) bumps the version and
    ``.data = ...`` moves the pointer, so either repacks. ``None`` (no bias) is a tensor like any
    other here. Inference tensors keep no version counter: they are packed at every call rather
    than risk serving stale weights.
    """

    def __init__(self, size: int = 32):
        self.size = size
        self._entries: OrderedDict[tuple[int, ...], tuple] = OrderedDict()

    def get(self, tensors: tuple[Tensor | None, ...], pack):
        """``pack(*tensors)``, from the cache when it is still valid."""
        present = [t for t in tensors if t is not None]
        if any(t.is_inference() for t in present):
            return pack(*tensors)
        key = tuple(id(t) for t in tensors)
        stamp = tuple((t.data_ptr(), t._version) for t in present)
        entry = self._entries.get(key)
        if entry is not None:
            refs, old_stamp, old_pack, packed = entry
            alive = all(r() is t for r, t in zip(refs, present, strict=True))
            if alive and old_stamp == stamp and old_pack is pack:
                self._entries.move_to_end(key)
                return packed
        packed = pack(*tensors)
        self._entries[key] = ([weakref.ref(t) for t in present], stamp, pack, packed)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return packed

    def clear(self) -> None:
        self._entries.clear()


_PACKED = _PackedCache()


class _LayerCalls:
    """The cpu backend's ``LayerCall`` per packed weights, kind, batch and re-sync period, so
    that repeated calls (a compiled or exported step run frame after frame) reuse its converted
    thresholds and buffers. An entry serves a call only if the call's thresholds equal its own
    (compared by value: in a captured graph they are new views at every call)."""

    def __init__(self, size: int = 32):
        self.size = size
        self._entries: OrderedDict[tuple, object] = OrderedDict()

    def get(self, cpu, kind: str, packed, call: LayerCall):
        batch = call.x.shape[1] if call.x.dim() == 3 else 0
        # The entry holds ``packed``, so its id cannot be reused by another object meanwhile.
        key = (id(packed), kind, batch, call.resync_every)
        layer = self._entries.get(key)
        if (
            layer is None
            or layer.packed is not packed
            or not layer.takes(call.theta_x, call.theta_h)
        ):
            layer = cpu.LayerCall(
                kind, packed, call.theta_x, call.theta_h, batch, call.resync_every
            )
            self._entries[key] = layer
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        return layer

    def clear(self) -> None:
        self._entries.clear()


_CALLS = _LayerCalls()


# -- registration ----------------------------------------------------------------------------

# Registrations live as long as this object: a module global, never collected.
_LIB = torch.library.Library(NAMESPACE, "DEF")


def _register() -> None:
    for kind, layer in LAYERS.items():
        qualname = f"{NAMESPACE}::{layer.name}"
        _LIB.define(_schema(layer))
        _LIB.impl(layer.name, _default_kernel(kind), "CompositeExplicitAutograd")
        _LIB.impl(layer.name, _cpu_kernel(kind), "CPU")
        torch.library.register_fake(qualname, _fake_kernel(kind), lib=_LIB)
        torch.library.register_autograd(
            qualname, _no_backward(layer), setup_context=lambda ctx, inputs, output: None, lib=_LIB
        )


_register()


# -- the backend surface, for the modules while a graph is captured --------------------------


def is_available() -> bool:
    return True


def supports(device: torch.device, dtype: torch.dtype, needs_grad: bool) -> bool:
    """Any device and floating dtype, inference only (there is no backward)."""
    return dtype.is_floating_point and not needs_grad


# The operator takes torch's layout, as the reference backend does (its kernels pack themselves).
pack = reference.pack


def _call(kind: str, x, state, packed, theta_x, theta_h, count: bool, resync_every: int):
    layer = LAYERS[kind]
    op = getattr(torch.ops.deltarnn, layer.name)
    outs = op(x, *state, *packed, theta_x, theta_h, count, resync_every)
    fields = len(layer.state_type._fields)
    new_state = layer.state_type(*outs[1 : 1 + fields])
    counts = DeltaCounts(*outs[1 + fields :]) if count else None
    return outs[0], new_state, counts


def gru(x, state: DeltaGRUState, packed, theta_x, theta_h, *, count=False, resync_every=0):
    """One delta GRU layer through ``torch.ops.deltarnn.gru_layer``: the contract of
    :func:`deltarnn.functional.delta_gru` (``packed`` from :func:`pack`, thresholds 1-D),
    returning ``(output, DeltaGRUState, DeltaCounts | None)``."""
    return _call("GRU", x, state, packed, theta_x, theta_h, count, resync_every)


def lstm(x, state: DeltaLSTMState, packed, theta_x, theta_h, *, count=False, resync_every=0):
    """One delta LSTM layer through ``torch.ops.deltarnn.lstm_layer``; see :func:`gru`."""
    return _call("LSTM", x, state, packed, theta_x, theta_h, count, resync_every)
