"""Specific exception types. Each message names the argument and what was expected."""

from __future__ import annotations


class DeltaRNNError(Exception):
    """Base class of every error this package raises on purpose."""


class ShapeError(DeltaRNNError, ValueError):
    """A tensor has the wrong rank or size (input, h0, c0, state, threshold)."""


class ThresholdError(DeltaRNNError, ValueError):
    """A threshold is negative, NaN, infinite, or of the wrong shape."""


class DTypeError(DeltaRNNError, TypeError):
    """A tensor's dtype does not match the module's parameters."""


class DeviceError(DeltaRNNError, ValueError):
    """A tensor is on another device than the module's parameters."""


class ConfigError(DeltaRNNError, ValueError):
    """A constructor or config argument is out of range or unsupported (e.g. bidirectional)."""


class BackendError(DeltaRNNError, RuntimeError):
    """The requested backend is unknown, unavailable, or cannot run this call."""


class StaleError(DeltaRNNError, RuntimeError):
    """A copy of a module's tensors (a streamer's weights and thresholds) no longer matches the
    module: a parameter or threshold was replaced or modified after the copy was made."""


class RunFolderError(DeltaRNNError, RuntimeError):
    """A run folder or checkpoint is incomplete, corrupt, or belongs to another config."""


class CheckpointError(DeltaRNNError, RuntimeError):
    """Saved weights do not fit the module or cannot be read: missing or unexpected keys, a wrong
    shape or a non-float dtype, a corrupt or truncated file (the message names the file)."""


class ExportError(DeltaRNNError, RuntimeError):
    """A graph capture (``torch.jit.trace``/``script``, ONNX export) cannot record this module
    correctly; raised instead of recording a graph that would be wrong on other inputs."""
