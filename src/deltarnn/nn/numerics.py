"""Deterministic mode: float32 weights and I/O, float64 state and accumulation.

In float32 the backends sum the products in different orders, so their hidden states differ by
about 1e-7; when a change ``|h - ĥ|`` lands that close to Θ, one backend sends it and another does
not, and from there the two runs drift apart (a different value was sent, so every later memory
differs). Rounding ``|Δ|`` the same way everywhere cannot help: the h being compared already differs.

With ``deterministic=True`` a float32 module keeps its float32 weights and takes and returns
float32 tensors, but runs every layer in float64: the input and the weights are widened
exactly (every float32 value is a float64 value), and the state (x̂, ĥ, memories, h, c) is
kept in float64 between calls. Then:

* the input side decides exactly alike on every backend: the difference of two float32 values
  is exact in float64, so ``|x - x̂| > Θx`` has one answer;
* the hidden side agrees to about 1e-15 between backends, so a different decision needs a
  change within about 1e-15 of Θh, which over long streams is not seen (see the test and
  ``benchmarks/long_stream_agreement.py``).

The price is float64 arithmetic and float64 weights in the backends' packed copies.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype, deterministic: bool) -> torch.dtype:
    """The dtype a layer runs in: float64 for a float32 module in deterministic mode."""
    return torch.float64 if deterministic and dtype == torch.float32 else dtype


def as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``; ``t`` itself when it already is. (``t.to(dtype)`` returns it too, but
    a captured graph records that call as two nodes, which an exported step runs every frame.)"""
    return t if t.dtype == dtype else t.to(dtype)


def cast_state(state: tuple, dtype: torch.dtype) -> tuple:
    """Every floating-point field of every layer's state in ``dtype`` (counters untouched)."""
    return tuple(
        type(s)(
            *(
                as_dtype(f, dtype) if isinstance(f, Tensor) and f.is_floating_point() else f
                for f in s
            )
        )
        for s in state
    )
