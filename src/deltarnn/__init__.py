"""deltarnn: delta networks for PyTorch (Neil, Lee, Delbruck & Liu, ICML 2017).

A recurrent layer that sends a neuron's value only when it has changed by more than a threshold
since it was last sent, so each step multiplies only the weight columns of the inputs that moved.

The names below are imported on first use (PEP 562), so that ``deltarnn --help`` and
``import deltarnn.errors`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "BackendError": "deltarnn.errors",
    "CheckpointError": "deltarnn.errors",
    "ConfigError": "deltarnn.errors",
    "DeltaRNNError": "deltarnn.errors",
    "DeviceError": "deltarnn.errors",
    "DTypeError": "deltarnn.errors",
    "ExportError": "deltarnn.errors",
    "ShapeError": "deltarnn.errors",
    "StaleError": "deltarnn.errors",
    "ThresholdError": "deltarnn.errors",
    "CostAccumulator": "deltarnn.cost",
    "CostReport": "deltarnn.cost",
    "measure": "deltarnn.cost",
    "export_c": "deltarnn.export",
    "DeltaGRU": "deltarnn.nn",
    "DeltaGRUCell": "deltarnn.nn",
    "DeltaGRUState": "deltarnn.nn",
    "DeltaLSTM": "deltarnn.nn",
    "DeltaLSTMCell": "deltarnn.nn",
    "DeltaLSTMState": "deltarnn.nn",
    "DeltaRNNState": "deltarnn.nn",
    "Streamer": "deltarnn.nn",
    "load_state": "deltarnn.nn",
    "save_state": "deltarnn.nn",
    "convert": "deltarnn.nn",
    "from_torch": "deltarnn.nn",
    "revert": "deltarnn.nn",
    "to_torch": "deltarnn.nn",
}
_SUBMODULES = ("functional",)

__all__ = [  # the same names as _EXPORTS and _SUBMODULES, spelled out for linters
    "BackendError",
    "CheckpointError",
    "ConfigError",
    "CostAccumulator",
    "CostReport",
    "DTypeError",
    "DeltaGRU",
    "DeltaGRUCell",
    "DeltaGRUState",
    "DeltaLSTM",
    "DeltaLSTMCell",
    "DeltaLSTMState",
    "DeltaRNNError",
    "DeltaRNNState",
    "DeviceError",
    "ExportError",
    "ShapeError",
    "StaleError",
    "Streamer",
    "ThresholdError",
    "__version__",
    "convert",
    "export_c",
    "from_torch",
    "functional",
    "load_state",
    "measure",
    "revert",
    "save_state",
    "to_torch",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from . import functional
    from .cost import CostAccumulator, CostReport, measure
    from .errors import (
        BackendError,
        CheckpointError,
        ConfigError,
        DeltaRNNError,
        DeviceError,
        DTypeError,
        ExportError,
        ShapeError,
        StaleError,
        ThresholdError,
    )
    from .export import export_c
    from .nn import (
        DeltaGRU,
        DeltaGRUCell,
        DeltaGRUState,
        DeltaLSTM,
        DeltaLSTMCell,
        DeltaLSTMState,
        DeltaRNNState,
        Streamer,
        convert,
        from_torch,
        revert,
        to_torch,
    )
