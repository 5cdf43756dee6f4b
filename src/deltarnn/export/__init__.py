"""Deployment artifacts: a trained delta model as dependency-free C for a small device.

* :func:`export_c` writes ``<prefix>.h`` / ``<prefix>.c`` (and a test driver) from a module,
* :func:`read_model` checks a module and reads it into the arrays the C step holds,
* :class:`MemoryReport`: bytes of weights and state, printed by ``deltarnn export-c``,
* :class:`HostBuild` compiles an export for this machine and steps it through ctypes, and
  :func:`python_stream` steps the module in Python, to compare the two before the export goes
  to a device.
"""

from .c_export import CExport, export_c
from .compare import PythonRun, python_stream
from .host import HostBuild, find_compiler
from .memory import MemoryReport, memory_report
from .model import ExportedLayer, ExportedModel, read_model

__all__ = [
    "CExport",
    "ExportedLayer",
    "ExportedModel",
    "HostBuild",
    "MemoryReport",
    "PythonRun",
    "export_c",
    "find_compiler",
    "memory_report",
    "python_stream",
    "read_model",
]
