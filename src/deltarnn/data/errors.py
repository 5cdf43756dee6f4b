"""Exceptions raised by the data loaders.

They extend :class:`deltarnn.errors.DeltaRNNError` and a built-in type, so callers may catch either
the package's base class or the usual ``FileNotFoundError`` / ``ValueError`` / ``RuntimeError``.
Bad arguments (sizes, fractions, split names) raise :class:`deltarnn.errors.ConfigError`.
"""

from __future__ import annotations

from ..errors import DeltaRNNError


class DataNotFoundError(DeltaRNNError, FileNotFoundError):
    """A data set is not where the loader looked: set ``DELTARNN_DATA``, pass ``root=``, or
    pass ``download=True`` where the loader can fetch it."""


class DataIntegrityError(DeltaRNNError, ValueError):
    """Files are present but wrong: checksum mismatch, missing or extra files, malformed labels."""


class DownloadError(DeltaRNNError, RuntimeError):
    """Fetching or unpacking a data set failed (network, missing tool, archive layout)."""
