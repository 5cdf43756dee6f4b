"""deltarnn: delta networks for PyTorch (Neil, Lee, Delbruck & Liu, ICML 2017).

A recurrent layer that sends a neuron's value only when it has changed by more than a threshold
since it was last sent, so each step multiplies only the weight columns of the inputs that moved.
"""

__version__ = "0.1.0"

from . import functional
from .cost import CostReport, measure
from .errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DeltaRNNError,
    DeviceError,
    DTypeError,
    ExportError,
    ShapeError,
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
    convert,
    from_torch,
    revert,
    to_torch,
)

__all__ = [
    "BackendError",
    "CheckpointError",
    "CostReport",
    "ConfigError",
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
    "ThresholdError",
    "__version__",
    "convert",
    "export_c",
    "from_torch",
    "functional",
    "measure",
    "revert",
    "to_torch",
]
