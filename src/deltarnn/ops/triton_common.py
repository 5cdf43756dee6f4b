"""What the Triton inference backend and the fast training path share: the kernel module, the
Triton mode and version checks, device guards, CUDA-graph capture and the length buckets of the
graph caches.

Supported Triton: :data:`TRITON_RANGE` (the ``triton`` extra of the package says the same). The
lower end is the oldest version every kernel variant is compiled with ahead of time
(``benchmarks/gpu_compile_check.py``); the upper end the newest.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from types import ModuleType

import torch
import triton

from ..errors import BackendError

log = logging.getLogger(__name__)

TRITON_RANGE = ((3, 6), (3, 10))  # >= 3.6, < 3.10
# Longest sequence segment replayed from one CUDA graph; longer sequences are several segments.
MAX_GRAPH_STEPS = 256


def triton_version() -> tuple[int, int]:
    major, minor = triton.__version__.split(".")[:2]
    return int(major), int(minor)


def version_supported() -> bool:
    low, high = TRITON_RANGE
    return low <= triton_version() < high


def _range_text() -> str:
    (a, b), (c, d) = TRITON_RANGE
    return f">={a}.{b},<{c}.{d}"


def interpret() -> bool:
    """Whether Triton runs kernels in its interpreter in this process.

    Triton reads ``TRITON_INTERPRET`` when it is imported and builds its own library functions
    (``tl.zeros``, ``tl.sum``...) for one mode or the other, so setting the variable after
    ``import triton`` has no effect; this checks both the variable and what Triton built.
    """
    return os.environ.get("TRITON_INTERPRET") == "1" and not isinstance(
        triton.language.standard.zeros, triton.runtime.jit.JITFunction
    )


def kernels() -> ModuleType:
    """The kernel module (imported on first use, so importing a backend compiles nothing)."""
    if not version_supported():
        raise BackendError(
            f"triton {triton.__version__} is outside the supported range {_range_text()}"
        )
    from . import _triton_kernels as module

    if module.INTERPRETED != interpret():
        raise BackendError(
            "the Triton kernels were built for "
            + ("the interpreter" if module.INTERPRETED else "the GPU")
            + " but Triton now runs the other way; set TRITON_INTERPRET before importing triton"
        )
    return module


def available() -> bool:
    """A CUDA device or the interpreter, and a supported Triton (a warning says when not)."""
    if not (torch.cuda.is_available() or interpret()):
        return False
    if not version_supported():
        log.warning(
            "triton %s is outside the supported range %s: Triton kernels disabled",
            triton.__version__,
            _range_text(),
        )
        return False
    return True


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Make ``device`` the current CUDA device (Triton launches on the current device)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def capture_graph(fn: Callable[[], object]) -> tuple[torch.cuda.CUDAGraph, object]:
    """Run ``fn`` once on a side stream (compiles every kernel variant), then capture it.

    The capture is ``thread_local``: another thread's CUDA work (a data loader, autograd's
    worker threads) neither breaks the capture nor is captured. Returns the graph and what the
    captured call returned (its static outputs).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        result = fn()
    return graph, result


def segments(
    steps: int, graphed: bool, longest: int = MAX_GRAPH_STEPS
) -> Iterator[tuple[int, int]]:
    """``(start, length)`` segments of a sequence of ``steps`` steps.

    Eager runs are one segment. A graph is captured per segment length, so graphed runs use
    power-of-two lengths (the binary digits of T, at most ``longest`` each): any T is served by
    at most log2(longest) + 1 cached graphs, and varying lengths do not capture a new graph
    per length. Running a sequence in segments equals one pass (the state is carried).
    """
    if not graphed:
        yield 0, steps
        return
    start = 0
    while start < steps:
        length = min(longest, 1 << ((steps - start).bit_length() - 1))
        yield start, length
        start += length


def precision(dtype: torch.dtype, device: torch.device) -> str:
    """``tl.dot`` input precision: follow torch's own matmul setting for float32 on CUDA, so that
    a comparison against cuBLAS/cuDNN is like for like (and ``gpu_bench`` records the flag)."""
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if dtype == torch.float32 and tf32 else "ieee"


def launch_scan(k: ModuleType, x, xhat, theta, delta, last, held=None) -> None:
    """Delta-encode x (T, B, F) against xhat (B, F), xhat updated in place; writes the deltas
    (T, B, F) and/or ``last`` (T, B, F), the index of the step each entry last sent, and/or
    ``held`` (T, B, F), x̂ after each step."""
    steps, batch, features = x.shape
    n = batch * features
    block = 256
    k.delta_scan_kernel[(triton.cdiv(n, block),)](
        x, xhat, theta, xhat if delta is None else delta, xhat if last is None else last,
        xhat if held is None else held, steps, n, features,
        STORE_DELTA=delta is not None, STORE_LAST=last is not None, STORE_HELD=held is not None,
        BLOCK=block,
    )  # fmt: skip
