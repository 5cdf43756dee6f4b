"""Deployment artifacts: a trained delta model as dependency-free C for a small device.

* :func:`export_c` writes ``<prefix>.h`` / ``<prefix>.c`` (and a test driver) from a module,
* :func:`read_model` checks a module and reads it into the arrays the C step holds,
* :class:`MemoryReport`: bytes of weights and state, printed by ``deltarnn export-c``,
* :class:`HostBuild` compiles an export for this machine and steps it through ctypes, to check
  it against the Python streamer before it goes to a device.
"""

from .c_export import CExport, export_c
from .host import HostBuild, find_compiler
from .memory import MemoryReport, memory_report
from .model import ExportedLayer, ExportedModel, read_model

__all__ = [
    "CExport",
    "ExportedLayer",
    "ExportedModel",
    "HostBuild",
    "MemoryReport",
    "export_c",
    "find_compiler",
    "memory_report",
    "read_model",
]
