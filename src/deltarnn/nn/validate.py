"""Argument checks shared by the modules. Each error names the argument and what was expected."""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    """A threshold as a tensor of shape () or (features,), checked to be finite and >= 0."""
    if isinstance(value, bool):
        raise ThresholdError(f"{name} must be a float or a tensor, got a bool")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ThresholdError(f"{name} must be finite and >= 0, got {value!r}")
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    if not isinstance(value, Tensor):
        raise ThresholdError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != features):
        raise ThresholdError(
            f"{name} must be a scalar or of shape ({features},), got shape {tuple(value.shape)}"
        )
    if not value.is_floating_point():
        raise ThresholdError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ThresholdError(f"{name} must be finite and >= 0 everywhere")
    return value.detach().to(dtype=like.dtype, device=like.device).clone()


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
