"""Argument checks shared by the modules. Each error names the argument and what was expected."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DeviceError, DTypeError, ShapeError, ThresholdError

ThetaLike = float | int | Tensor
ThetaArg = ThetaLike | Sequence[ThetaLike]


def check_sizes(
    input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
) -> None:
    for name, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive int, got {value!r}")
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not 0.0 <= dropout <= 1.0
    ):
        raise ConfigError(f"dropout must be a number in [0, 1], got {dropout!r}")


def threshold_tensor(value: ThetaLike, name: str, features: int, like: Tensor) -> Tensor:
    """A threshold as a tensor of shape () or (features,) in ``like``'s dtype and device.

    Any real scalar (Python, NumPy or a 0-d tensor) or a 1-D floating tensor is taken; it must be
    finite and >= 0, and stay finite in ``like``'s dtype (1e308 overflows float32).
    """
    if isinstance(value, (bool, np.bool_)):
        raise ThresholdError(f"{name} must be a float or a tensor, got a bool ({value!r})")
    if isinstance(value, numbers.Real):  # float, int, np.float32, np.int64, ...
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ThresholdError(f"{name} must be finite and >= 0, got {value!r}")
        tensor = torch.tensor(number, dtype=like.dtype, device=like.device)
    elif isinstance(value, Tensor):
        tensor = _threshold_from_tensor(value, name, features, like)
    else:
        raise ThresholdError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    if not bool(torch.isfinite(tensor).all()):
        raise ThresholdError(
            f"{name} ({_describe(value)}) overflows {like.dtype} (largest finite value "
            f"{torch.finfo(like.dtype).max:.3g})"
        )
    return tensor


def _threshold_from_tensor(value: Tensor, name: str, features: int, like: Tensor) -> Tensor:
    if value.requires_grad:
        raise ThresholdError(
            f"{name} has requires_grad=True, but a module's thresholds are fixed buffers: the "
            "send decision |Δ| > Θ has no gradient with respect to Θ. Pass theta.detach() to "
            "use the value, or learn thresholds with deltarnn.train.LearnableDeltaEncoder "
            "(method.learnable_theta = true in a training config)"
        )
    if value.is_meta:
        raise ThresholdError(f"{name} is a meta tensor (no values); give a threshold with values")
    if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != features):
        raise ThresholdError(
            f"{name} must be a scalar or of shape ({features},), got shape {tuple(value.shape)}"
        )
    if not value.is_floating_point():
        raise ThresholdError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ThresholdError(f"{name} must be finite and >= 0 everywhere, got {_describe(value)}")
    return value.detach().to(dtype=like.dtype, device=like.device).clone()


def _describe(value: ThetaLike) -> str:
    """A short rendering of a threshold for a message: the value, or a tensor's bad entries."""
    if not isinstance(value, Tensor):
        return repr(value)
    if value.dim() == 0:
        return repr(value.item())
    bad = (~torch.isfinite(value)) | (value < 0)
    if not bool(bad.any()):  # finite and >= 0, too large for the target dtype
        bad = value.abs() == value.abs().max()
    index = int(bad.nonzero()[0, 0])
    return f"a tensor with [{index}] = {value[index].item()!r}"


def per_layer(value: ThetaArg, name: str, num_layers: int) -> list[ThetaLike]:
    """Expand a threshold argument to one value per layer.

    A float or tensor applies to every layer; a list or tuple gives one value per layer.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ThresholdError(
                f"{name} given per layer must have num_layers={num_layers} entries, got {len(value)}"
            )
        return list(value)
    return [value] * num_layers


def check_input(
    x: Tensor, input_size: int, param: Tensor, batch_first: bool
) -> tuple[Tensor, bool]:
    """Validate an RNN input; return it as (T, B, I) and whether it was unbatched."""
    if not isinstance(x, Tensor):
        raise ShapeError(f"input must be a tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        layout = "(B, T, input_size)" if batch_first else "(T, B, input_size)"
        raise ShapeError(
            f"input must be 2-D (T, input_size) unbatched or 3-D {layout}, got shape {tuple(x.shape)}"
        )
    if x.shape[-1] != input_size:
        raise ShapeError(
            f"input must have input_size={input_size} features in its last dimension, got {x.shape[-1]}"
        )
    check_like(x, "input", param)
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
    elif batch_first:
        x = x.transpose(0, 1)
    return x, unbatched


def check_like(t: Tensor, name: str, param: Tensor) -> None:
    """A tensor must share the parameters' dtype and device."""
    if t.dtype != param.dtype:
        raise DTypeError(
            f"{name} has dtype {t.dtype} but the module's parameters are {param.dtype}"
        )
    if t.device != param.device:
        raise DeviceError(
            f"{name} is on {t.device} but the module's parameters are on {param.device}"
        )


def check_shape(t: Tensor, name: str, expected: tuple[int, ...], param: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise ShapeError(f"{name} must be a tensor of shape {expected}, got {type(t).__name__}")
    if tuple(t.shape) != expected:
        raise ShapeError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
    check_like(t, name, param)
