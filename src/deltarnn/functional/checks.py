"""Argument checks of the spec: a wrong state, weight or threshold gets an error naming it.

They look at shapes, dtypes and devices only, once per call (never per step, and never a value
on the device, so no synchronisation): the spec stays as cheap to train with as before. Values
(a NaN or negative threshold) are checked where they are set: modules and streamers, with
:func:`check_threshold`.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ..errors import DeviceError, DTypeError, ShapeError, ThresholdError
from .state import DeltaGRUState, DeltaLSTMState


def check_layer_args(
    x: Tensor,
    state: DeltaGRUState | DeltaLSTMState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    theta_x: Tensor | float,
    theta_h: Tensor | float,
    gates: int,
) -> None:
    """The arguments of :func:`~deltarnn.functional.delta_gru` (``gates=3``) or ``delta_lstm``
    (``gates=4``) fit together: x (T, B, I), weight_ih (G*H, I), weight_hh (G*H, H), the state's
    fields (B, ·), thresholds broadcastable to (I,) and (H,); one dtype and device throughout."""
    kind, state_type = ("GRU", DeltaGRUState) if gates == 3 else ("LSTM", DeltaLSTMState)
    for name, t, rank in (("x", x, 3), ("weight_ih", weight_ih, 2), ("weight_hh", weight_hh, 2)):
        if not isinstance(t, Tensor) or t.dim() != rank:
            raise ShapeError(f"{name} must be a {rank}-D tensor, got {_shape_of(t)}")
    hidden = weight_hh.shape[1]
    if weight_hh.shape[0] != gates * hidden:
        raise ShapeError(
            f"weight_hh of a delta {kind} must have shape ({gates}H, H), got {_shape_of(weight_hh)}"
        )
    inputs = x.shape[2]
    if tuple(weight_ih.shape) != (gates * hidden, inputs):
        raise ShapeError(
            f"weight_ih must have shape ({gates * hidden}, {inputs}) for x with I={inputs} and "
            f"H={hidden} (from weight_hh), got {_shape_of(weight_ih)}"
        )
    if not isinstance(state, state_type):
        raise ShapeError(f"state must be a {state_type.__name__}, got {type(state).__name__}")
    batch = x.shape[1]
    sizes = {"h": hidden, "c": hidden, "x_hat": inputs, "h_hat": hidden, "m": 4 * hidden}
    tensors = {"weight_ih": weight_ih, "weight_hh": weight_hh}
    for field in state._fields:
        if field not in sizes:  # bookkeeping fields (not of shape (B, features)) are not checked
            continue
        t = getattr(state, field)
        if not isinstance(t, Tensor) or tuple(t.shape) != (batch, sizes[field]):
            raise ShapeError(
                f"state.{field} must have shape ({batch}, {sizes[field]}) for x {_shape_of(x)} "
                f"and H={hidden}, got {_shape_of(t)}"
            )
        tensors[f"state.{field}"] = t
    for name, theta, features in (("theta_x", theta_x, inputs), ("theta_h", theta_h, hidden)):
        if isinstance(theta, Tensor):
            if theta.dim() > 1 or theta.numel() not in (1, features):
                raise ThresholdError(
                    f"{name} must be a scalar or of shape ({features},), got {_shape_of(theta)}"
                )
            tensors[name] = theta
    for name, t in tensors.items():
        if t.device != x.device:
            raise DeviceError(f"{name} is on {t.device} but x is on {x.device}")
    if _autocast(x.device):  # the products take mixed dtypes on purpose
        return
    for name, t in tensors.items():
        if t.dtype != x.dtype and not name.startswith("theta"):
            raise DTypeError(f"{name} has dtype {t.dtype} but x has dtype {x.dtype}")


def _autocast(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type without autocast (meta)
        return False


def check_threshold(value: Tensor | float, name: str, features: int) -> None:
    """A threshold is a real scalar (Python, NumPy, 0-d tensor) or a floating tensor of shape
    (features,), finite and >= 0 everywhere."""
    if isinstance(value, bool):  # an int to Python; NumPy's bool is no number and fails below
        raise ThresholdError(f"{name} must be a float or a tensor, got a bool ({value!r})")
    if isinstance(value, numbers.Real):  # float, int, np.float32, np.int64, ...
        if not math.isfinite(float(value)) or value < 0:
            raise ThresholdError(f"{name} must be finite and >= 0, got {value!r}")
        return
    if not isinstance(value, Tensor):
        raise ThresholdError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    if value.is_meta:
        raise ThresholdError(f"{name} is a meta tensor (no values); give a threshold with values")
    if value.dim() > 1 or value.numel() not in (1, features):
        raise ThresholdError(
            f"{name} must be a scalar or of shape ({features},), got shape {tuple(value.shape)}"
        )
    if not value.is_floating_point():
        raise ThresholdError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ThresholdError(
            f"{name} must be finite and >= 0 everywhere, got {describe_threshold(value)}"
        )


def describe_threshold(value: Tensor | float) -> str:
    """A short rendering for a message: the value, or a tensor's first bad (or largest) entry."""
    if not isinstance(value, Tensor):
        return repr(value)
    value = value.detach()
    if value.dim() == 0:
        return repr(value.item())
    bad = (~torch.isfinite(value)) | (value < 0)
    if not bool(bad.any()):  # all finite and >= 0: name the largest (an overflow)
        bad = value.abs() == value.abs().max()
    index = int(bad.nonzero()[0, 0])
    return f"a tensor with [{index}] = {value[index].item()!r}"


def _shape_of(t: object) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
