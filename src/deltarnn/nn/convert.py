"""Conversion between ``torch.nn`` recurrent modules and their delta counterparts."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from . import validate as V
from .cells import DeltaGRUCell, DeltaLSTMCell
from .rnn import DeltaGRU, DeltaLSTM

_TO_DELTA = {
    nn.GRU: DeltaGRU,
    nn.LSTM: DeltaLSTM,
    nn.GRUCell: DeltaGRUCell,
    nn.LSTMCell: DeltaLSTMCell,
}
_TO_TORCH = {delta: torch_type for torch_type, delta in _TO_DELTA.items()}


def _constructor(target: type, module: nn.Module, **extra) -> nn.Module:
    """``target`` built with the sizes, options, device and dtype of ``module`` (torch or delta)."""
    weight = next(module.parameters())
    factory = {"device": weight.device, "dtype": weight.dtype, **extra}
    if isinstance(module, (nn.GRUCell, nn.LSTMCell, DeltaGRUCell, DeltaLSTMCell)):
        return target(module.input_size, module.hidden_size, module.bias, **factory)
    args = (
        module.input_size,
        module.hidden_size,
        module.num_layers,
        module.bias,
        module.batch_first,
    )
    return target(*args, module.dropout, **factory)


def from_torch(
    module: nn.Module,
    theta_x: V.ThetaArg = 0.0,
    theta_h: V.ThetaArg = 0.0,
    backend: str = "auto",
) -> DeltaGRU | DeltaLSTM | DeltaGRUCell | DeltaLSTMCell:
    """A delta module with the weights of ``module`` (``nn.GRU``, ``nn.LSTM``, ``nn.GRUCell`` or
    ``nn.LSTMCell``) and the given thresholds. The torch module is not changed.

    With ``theta_x = theta_h = 0`` the result computes the same function as ``module``.
    """
    delta_type = _TO_DELTA.get(type(module))
    if delta_type is None:
        raise ConfigError(
            f"module must be one of nn.GRU, nn.LSTM, nn.GRUCell, nn.LSTMCell; got {type(module).__name__}"
        )
    if getattr(module, "bidirectional", False):
        raise ConfigError(
            "module.bidirectional must be False: delta networks run on causal streams"
        )
    if getattr(module, "proj_size", 0):
        raise ConfigError(f"module.proj_size must be 0, got {module.proj_size}")
    delta = _constructor(delta_type, module, theta_x=theta_x, theta_h=theta_h, backend=backend)
    delta.load_state_dict(module.state_dict(), strict=True)
    delta.train(module.training)
    return delta


def to_torch(module: DeltaGRU | DeltaLSTM | DeltaGRUCell | DeltaLSTMCell) -> nn.Module:
    """The ``torch.nn`` module with the same weights (thresholds are dropped: it is dense)."""
    torch_type = _TO_TORCH.get(type(module))
    if torch_type is None:
        raise ConfigError(
            "module must be a DeltaGRU, DeltaLSTM, DeltaGRUCell or DeltaLSTMCell; "
            f"got {type(module).__name__}"
        )
    dense = _constructor(torch_type, module)
    weights = {k: v for k, v in module.state_dict().items() if not k.startswith("theta_")}
    dense.load_state_dict(weights, strict=True)
    dense.train(module.training)
    return dense
