"""Argument checks shared by the modules. Each error names the argument and what was expected."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DeviceError,
    DTypeError,
    ShapeError,
    ThresholdError,
)
from ..functional.checks import check_threshold, describe_threshold
from ..ops import check_backend_name

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
        check_positive_int(value, name)
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not 0.0 <= dropout <= 1.0
    ):
        raise ConfigError(f"dropout must be a number in [0, 1], got {dropout!r}")


def check_positive_int(value: object, name: str) -> None:
    """An int > 0 (NumPy's integers too; a bool is not a size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def threshold_tensor(value: ThetaLike, name: str, features: int, like: Tensor) -> Tensor:
    """A threshold as a tensor of shape () or (features,) in ``like``'s dtype and device.

    Any real scalar (Python, NumPy or a 0-d tensor) or a 1-D floating tensor is taken; it must be
    finite and >= 0, and stay finite in ``like``'s dtype (1e308 overflows float32).
    """
    if isinstance(value, Tensor) and value.requires_grad:
        raise ThresholdError(
            f"{name} has requires_grad=True, but a module's thresholds are fixed buffers: the "
            "send decision |Δ| > Θ has no gradient with respect to Θ. Pass theta.detach() to "
            "use the value, or learn thresholds with deltarnn.train.LearnableDeltaEncoder "
            "(method.learnable_theta = true in a training config)"
        )
    check_threshold(value, name, features)
    if isinstance(value, Tensor):
        tensor = value.detach().to(dtype=like.dtype, device=like.device).clone()
    else:
        tensor = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(tensor).all()):
        raise ThresholdError(
            f"{name} ({describe_threshold(value)}) overflows {like.dtype} (largest finite value "
            f"{torch.finfo(like.dtype).max:.3g})"
        )
    return tensor


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


def check_parameters(module: torch.nn.Module) -> None:
    """All parameters and thresholds of a module share the first weight's dtype and device."""
    named = list(module.named_parameters()) + [
        (name, b) for name, b in module.named_buffers() if name.startswith("theta_")
    ]
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.dtype != first.dtype:
            raise DTypeError(
                f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}: a module's "
                "parameters share one dtype (convert the whole module, e.g. module.to(torch.float64))"
            )
        if t.device != first.device:
            raise DeviceError(
                f"{name} is on {t.device} but {first_name} is on {first.device}: move the whole "
                "module, e.g. module.to(device)"
            )


def checked_thresholds(module, state_dict: dict, prefix: str) -> dict[str, Tensor]:
    """The thresholds a state_dict holds for ``module``, validated, by buffer name.

    Weights are checked too: a non-float dtype or a wrong shape is a :class:`CheckpointError`
    naming the key (torch would cast an int32 checkpoint silently).
    """
    like = module.layer_weights(0)[0]
    for name, param in module.named_parameters(recurse=False):
        value = state_dict.get(prefix + name)
        if not isinstance(value, Tensor):
            continue
        if not value.is_floating_point():
            raise CheckpointError(
                f"{prefix + name} has dtype {value.dtype} in the state_dict; weights must be "
                "floating point (they are cast to the module's dtype, an int tensor is not)"
            )
        if value.shape != param.shape:
            raise CheckpointError(
                f"size mismatch for {prefix + name}: shape {tuple(value.shape)} in the state_dict, "
                f"this {module.__class__.__name__}({module.extra_repr()}) needs {tuple(param.shape)}"
            )
    thresholds = {}
    for k in range(module.num_layers):
        for kind in "xh":
            name = f"theta_{kind}_l{k}"
            if prefix + name in state_dict:
                features = module.layer_sizes(k)[0 if kind == "x" else 1]
                value = state_dict[prefix + name]
                thresholds[name] = threshold_tensor(value, prefix + name, features, like)
    return thresholds


def check_state_dict_keys(module, missing: list[str], unexpected: list[str]) -> None:
    """A strict load found missing or unexpected keys: say which, and how to load a part."""
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"missing keys {missing}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected}")
    raise CheckpointError(
        f"state_dict does not fit {module.__class__.__name__}({module.extra_repr()}): "
        f"{'; '.join(parts)}. A torch.nn.GRU/LSTM state_dict of the same sizes loads as is; "
        "load_state_dict(..., strict=False) loads a part"
    )


def check_backend(name: object) -> None:
    """``backend=`` names a known backend (whether it can run a call is decided per call)."""
    if not isinstance(name, str):
        raise BackendError(f"backend must be a string, got {type(name).__name__}")
    check_backend_name(name)
