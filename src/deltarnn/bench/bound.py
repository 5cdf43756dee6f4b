"""The yardstick every measured speed-up is divided by.

A delta step skips multiply-accumulates, so the harness compares a measured speed-up with the
cost model's *compute* speed-up of one layer step at the measured occupancies,
:func:`deltarnn.cost.compute_speedup_bound` (the one cost formula of :mod:`deltarnn.cost.model`).
Its memory-traffic twin is :func:`deltarnn.cost.memory_speedup_bound`.
"""

from __future__ import annotations

from ..cost.model import compute_speedup_bound

__all__ = ["compute_speedup_bound"]
