"""Backends that run delta-RNN layers: the reference (the functional spec) and fast kernels.

Every backend is a module with the same surface:

* ``NAME``: its name, as passed to ``backend=``.
* ``is_available() -> bool``: whether it can run here at all (its optional dependency imports).
* ``supports(device, dtype, needs_grad) -> bool``: whether it can run this call.
* ``pack(weight_ih, weight_hh) -> object``: the weights in the backend's own layout. Modules cache
  the result until a parameter changes, so packing is paid once, not per call; a backend that
  sets ``DIFFERENTIABLE = True`` (autograd) or ``LIVE_WEIGHTS = True`` (graph capture, see
  :mod:`deltarnn.ops.custom_ops`) is given the live parameters at every call instead.
* ``gru(x, state, packed, theta_x, theta_h, *, count=False) -> (output, state, counts)`` and
  ``lstm(...)``: the same contract as :func:`deltarnn.functional.delta_gru` / ``delta_lstm``, with
  thresholds already expanded to 1-D tensors of the feature size.

Fast backends are imported softly: the package works without their optional dependencies.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import torch

from ..errors import BackendError
from .choice_log import log_auto_choice

log = logging.getLogger(__name__)

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
