"""Conversion between ``torch.nn`` recurrent modules and their delta counterparts."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from ..errors import ConfigError, DeltaRNNError
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


ThetaSpec = V.ThetaArg | Mapping[str, V.ThetaArg]


def convert(
    model: nn.Module,
    theta_x: ThetaSpec = 0.0,
    theta_h: ThetaSpec = 0.0,
    *,
    backend: str = "auto",
) -> nn.Module:
    """Swap every ``nn.GRU``, ``nn.LSTM``, ``nn.GRUCell`` and ``nn.LSTMCell`` inside ``model`` for
    its delta counterpart, in place, keeping the weights (as ``torch.ao`` dynamic quantisation
    swaps modules).

    Modules are matched by exact type (a subclass of ``nn.GRU`` with its own ``forward`` is left
    alone). A module that appears twice in the model is converted once and stays shared. Forward
    hooks registered on a swapped module are not carried over.

    Args:
        model: any module; when it is itself a recurrent module, the converted module is returned
            (there is no parent to swap it in).
        theta_x: Θx of every converted module (a float, a per-feature tensor or a list per layer),
            or a mapping from module names (as in ``model.named_modules()``) to their Θx; modules
            the mapping does not name get Θ = 0 (dense, lossless). A name that is not a converted
            module is an error.
        theta_h: Θh, likewise.
        backend: ``backend=`` of the delta modules.

    Returns:
        ``model``, now holding delta modules (or the converted module, see ``model``).

    Example::

        model = MyClassifier()                        # holds self.rnn = nn.GRU(...)
        deltarnn.convert(model, theta_x=0.1, theta_h={"rnn": 0.2})
        deltarnn.revert(model)                        # back to nn.GRU, same weights
    """
    names = [name for name, module in model.named_modules() if type(module) in _TO_DELTA]
    for arg, label in ((theta_x, "theta_x"), (theta_h, "theta_h")):
        if isinstance(arg, Mapping):
            unknown = sorted(set(arg) - set(names))
            if unknown:
                raise ConfigError(
                    f"{label} names {unknown}, which are not nn.GRU/LSTM/GRUCell/LSTMCell modules "
                    f"of the model; those are {names}"
                )

    def build(name: str, module: nn.Module) -> nn.Module:
        tx = theta_x.get(name, 0.0) if isinstance(theta_x, Mapping) else theta_x
        th = theta_h.get(name, 0.0) if isinstance(theta_h, Mapping) else theta_h
        try:
            return from_torch(module, theta_x=tx, theta_h=th, backend=backend)
        except DeltaRNNError as exc:
            raise type(exc)(f"module {name or type(module).__name__!r}: {exc}") from exc

    return _swap(model, _TO_DELTA, build)


def revert(model: nn.Module) -> nn.Module:
    """Undo :func:`convert`: swap every delta module inside ``model`` back to its ``torch.nn``
    module with the same weights, in place (thresholds are dropped). Returns ``model``, or the
    dense module when ``model`` is itself a delta module."""
    return _swap(model, _TO_TORCH, lambda name, module: to_torch(module))


def _swap(
    model: nn.Module, table: dict[type, type], build: Callable[[str, nn.Module], nn.Module]
) -> nn.Module:
    """Replace each submodule whose exact type is in ``table`` by ``build(name, module)``."""
    if type(model) in table:
        return build("", model)
    done: dict[int, nn.Module] = {}  # id of an original -> its replacement, for shared modules

    def visit(parent: nn.Module, prefix: str) -> None:
        # _modules, not named_children(): that one yields a shared module only once
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            name = f"{prefix}{child_name}"
            if type(child) in table:
                if id(child) not in done:
                    done[id(child)] = build(name, child)
                setattr(parent, child_name, done[id(child)])
            elif id(child) not in done:
                done[id(child)] = child
                visit(child, f"{name}.")

    visit(model, "")
    return model
