"""Backends that run delta-RNN layers: the reference (the functional spec) and fast kernels.

Every backend is a module with the same surface:

* ``NAME``: its name, as passed to ``backend=``.
* ``is_available() -> bool``: whether it can run here at all (its optional dependency imports).
* ``supports(device, dtype, needs_grad) -> bool``: whether it can run this call.
* ``pack(weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> object``: a layer's weights in the
  backend's own layout (the biases are needed by the memory re-sync). Modules cache the result
  until a parameter changes, so packing is paid once, not per call; a backend that sets
  ``DIFFERENTIABLE = True`` (autograd) or ``LIVE_WEIGHTS = True`` (graph capture, see
  :mod:`deltarnn.ops.custom_ops`) is given the live parameters at every call instead.
* ``gru(x, state, packed, theta_x, theta_h, *, count=False, resync_every=0) -> (output, state,
  counts)`` and ``lstm(...)``: the same contract as :func:`deltarnn.functional.delta_gru` /
  ``delta_lstm`` (outputs, returned state including ``since_sync``, counts, and the re-sync rule
  of :mod:`deltarnn.functional.state`), with thresholds already expanded to 1-D tensors of the
  feature size. Whatever wraps a layer call (a custom op, say) sees exactly these arguments.

A backend may also provide a stack streamer, the engine of :class:`deltarnn.Streamer`:

* ``StackStreamer(kind, layers, state, *, count=False, weights="float32",
  resync_every=RESYNC_EVERY)``: every layer of a stack advanced one frame per :meth:`step`.
  ``kind`` is ``"GRU"`` or ``"LSTM"``; ``layers`` a sequence of :class:`LayerParams` (tensors as
  the module holds them; it reads them once, at construction, and keeps its own copy or
  layout); ``state`` a tuple with one :class:`~deltarnn.functional.DeltaGRUState` /
  ``DeltaLSTMState`` per layer, batch B; ``weights="int8"`` runs on weights quantized per column
  as :func:`deltarnn.ops.int8.quantize_columns` does (a backend that cannot raises
  :class:`~deltarnn.errors.BackendError`).

  - ``step(frame, out=None) -> Tensor``: frame (B, I) of the weights' dtype and device; returns
    the last layer's h (B, H), a fresh tensor, or ``out`` (B, H) filled in place when given.
    One step equals :func:`deltarnn.functional.delta_gru` / ``delta_lstm`` layer after layer
    over that frame (T = 1) with the same ``resync_every``. Only a cheap check of the frame
    (shape, dtype, device) per step.
  - ``state() -> tuple``: the per-layer states after the last step (copies, safe to keep),
    ``since_sync`` included.
  - ``load_state(state) -> None``: continue from ``state`` (same batch and sizes; copied in).
  - ``counts() -> list[DeltaCounts]``: the last step's send counts per layer, T = 1 (``nx``
    (1, B), ``ux`` (1,), ``abs_x`` (1, B), ...); needs ``count=True``.
  - ``batch_size``: B.

Fast backends are imported softly: the package works without their optional dependencies.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import BackendError
from .choice_log import log_auto_choice

log = logging.getLogger(__name__)


class LayerParams(NamedTuple):
    """What a stack streamer reads of one layer (shapes for G gates, H hidden units, I inputs).

    Attributes:
        weight_ih: (G*H, I). weight_hh: (G*H, H).
        bias_ih, bias_hh: (G*H,) each, or ``None`` without bias.
        theta_x: (I,). theta_h: (H,).
    """

    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None
    bias_hh: Tensor | None
    theta_x: Tensor
    theta_h: Tensor


# Preference order for backend="auto": the first that is available and supports the call wins.
BACKENDS = ("triton", "cpu", "fused", "reference")
_MODULES = {
    "reference": "deltarnn.ops.reference",
    "cpu": "deltarnn.ops.cpu",
    "triton": "deltarnn.ops.triton",
    "fused": "deltarnn.ops.fused",
}


def check_backend_name(name: str) -> None:
    """``name`` is ``"auto"`` or one of :data:`BACKENDS` (available or not)."""
    if name != "auto" and name not in _MODULES:
        raise BackendError(
            f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {name!r}"
        )


def load_backend(name: str) -> ModuleType | None:
    """The backend module, or ``None`` when its optional dependency is missing."""
    if name == "auto":
        raise BackendError("load_backend takes a backend's own name; 'auto' is resolved per call")
    check_backend_name(name)
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:  # soft import: a missing optional dependency disables the backend
        log.debug("backend %s unavailable: %s", name, exc)
        return None
    return module if module.is_available() else None


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine."""
    return [name for name in BACKENDS if load_backend(name) is not None]


def select_backend(
    name: str, device: torch.device, dtype: torch.dtype, needs_grad: bool
) -> ModuleType:
    """Resolve ``backend=`` for one call.

    ``"auto"`` picks the first backend in :data:`BACKENDS` that supports the device, dtype and
    whether gradients are needed; a named backend that cannot run this call is an error, never a
    silent fallback.
    """
    if name == "auto":
        skipped = []
        for candidate in BACKENDS:
            module = load_backend(candidate)
            if module is not None and module.supports(device, dtype, needs_grad):
                log_auto_choice(candidate, skipped, torch.device(device), dtype, needs_grad)
                return module
            skipped.append((candidate, module is None))
        raise BackendError("no backend supports this call")  # unreachable: reference runs anywhere
    module = load_backend(name)
    if module is None:
        raise BackendError(
            f"backend {name!r} is not available here (is its optional dependency installed?)"
        )
    if not module.supports(device, dtype, needs_grad):
        hint = ""
        if needs_grad and module.supports(device, dtype, False):
            hint = (
                ": it has no backward. For inference run under torch.no_grad() (or call "
                "module.requires_grad_(False)); to train use backend='auto', 'fused' or 'reference'"
            )
        raise BackendError(
            f"backend {name!r} cannot run on device={device}, dtype={dtype}, "
            f"needs_grad={needs_grad}{hint}"
        )
    return module


def select_streamer_backend(name: str, device: torch.device, dtype: torch.dtype) -> ModuleType:
    """Resolve ``backend=`` for a stack streamer (inference: no gradients).

    ``"auto"`` picks the first backend in :data:`BACKENDS` that supports the call and provides a
    ``StackStreamer``; a named backend without one, or that cannot run the call, is an error.
    """
    if name == "auto":
        for candidate in BACKENDS:
            module = load_backend(candidate)
            if (
                module is not None
                and hasattr(module, "StackStreamer")
                and module.supports(device, dtype, False)
            ):
                return module
        raise BackendError("no backend provides a stack streamer for this call")  # unreachable
    module = select_backend(name, device, dtype, False)
    if not hasattr(module, "StackStreamer"):
        raise BackendError(
            f"backend {name!r} has no stack streamer; use backend='auto' or 'reference'"
        )
    return module
