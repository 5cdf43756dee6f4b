"""Say once which backend ``backend="auto"`` chose for a kind of call, and why.

A plain ``pip install deltarnn`` has neither numba nor triton, and then runs the pure-PyTorch
paths, which are correct but much slower: that deserves one warning naming what to install, not
silence. Every other choice is logged once at INFO level.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

log = logging.getLogger("deltarnn.ops")

# backend -> (the module it needs, the extra that installs it, the device type it serves)
OPTIONAL = {"cpu": ("numba", "cpu", "cpu"), "triton": ("triton", "triton", "cuda")}

_logged: set[tuple[str, torch.dtype, bool]] = set()


def missing_dependency(backend: str) -> str | None:
    """The module ``backend`` needs that is not installed here, or ``None``."""
    if backend not in OPTIONAL:
        return None
    module = OPTIONAL[backend][0]
    return module if importlib.util.find_spec(module) is None else None


def _reason(candidate: str, unavailable: bool) -> str:
    if not unavailable:
        return f"{candidate} does not support this call"
    module = missing_dependency(candidate)
    if module is not None:
        extra = OPTIONAL[candidate][1]
        return f"{candidate} needs {module} (pip install 'deltarnn[{extra}]')"
    return f"{candidate} is unavailable on this machine"


def log_auto_choice(
    chosen: str,
    skipped: list[tuple[str, bool]],
    device: torch.device,
    dtype: torch.dtype,
    needs_grad: bool,
) -> None:
    """Log the choice once per (device type, dtype, needs_grad).

    Args:
        chosen: the backend that will run.
        skipped: ``(name, unavailable)`` of each preferred backend passed over, in order.
    """
    key = (device.type, dtype, needs_grad)
    if key in _logged:
        return
    _logged.add(key)
    call = f"{device.type} {str(dtype).removeprefix('torch.')}" + (
        " with gradients" if needs_grad else ""
    )
    reasons = "; ".join(_reason(name, unavailable) for name, unavailable in skipped)
    message = f"backend='auto' runs {chosen!r} for {call}" + (f" ({reasons})" if reasons else "")
    # Missing a fast engine for inference on the device it serves is the one silent slow path.
    slow = not needs_grad and any(
        unavailable and missing_dependency(name) is not None and OPTIONAL[name][2] == device.type
        for name, unavailable in skipped
    )
    log.log(logging.WARNING if slow else logging.INFO, message)
