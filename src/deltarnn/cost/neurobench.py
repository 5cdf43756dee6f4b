"""The metrics NeuroBench reports, in the terms of a delta network.

NeuroBench (Yik et al., "NeuroBench: a framework for benchmarking neuromorphic computing
algorithms and systems", Nature Communications 2025) names four static and workload metrics
that users of event-driven models compare. Here they are computed from the same counts as the
rest of a :class:`~deltarnn.CostReport`:

* **effective MACs**: multiply-accumulates whose activation operand is non-zero. A delta
  network multiplies only the weight columns of the deltas it sent, so these are its delta MACs.
* **activation sparsity**: the fraction of zero activations entering the products, here of the
  deltas Δx and Δh over every step, sample and layer: ``1 - (sent x + sent h) / offered``.
* **footprint**: the bytes a deployment holds, weights (and biases) plus the state of one stream
  (h, [c], x̂, ĥ and the memories of every layer).
* **connection sparsity**: the fraction of weights (not biases) that are exactly zero.
"""

from __future__ import annotations

from typing import Any


def state_elements(module: Any) -> int:
    """Elements of the stream state of one sequence: per layer h, x̂, ĥ, 4H memories (and c)."""
    total = 0
    for k in range(module.num_layers):
        features, hidden = module.layer_sizes(k)
        total += features + (7 if module.mode == "LSTM" else 6) * hidden
    return total


def footprint_bytes(module: Any, weight_bytes: int, act_bytes: int) -> int:
    """Weights and biases at ``weight_bytes`` each plus one stream's state at ``act_bytes``."""
    params = sum(
        t.numel()
        for k in range(module.num_layers)
        for t in module.layer_weights(k)
        if t is not None
    )
    return params * weight_bytes + state_elements(module) * act_bytes


def connection_sparsity(module: Any) -> float:
    """Fraction of exactly-zero entries of the weight matrices (biases are not connections)."""
    zeros = total = 0
    for k in range(module.num_layers):
        for w in module.layer_weights(k)[:2]:
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / max(1, total)
