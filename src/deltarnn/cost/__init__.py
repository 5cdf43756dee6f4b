"""The accountant: the paper's analytic cost model and counts from observed send masks."""

from .accumulate import CostAccumulator
from .measure import measure
from .model import (
    GATES,
    StepCost,
    compute_speedup_bound,
    layer_step_cost,
    matvec_cost,
    memory_speedup_bound,
    product_cost,
)
from .report import CostReport, DeltaModule, LayerCost, layer_cost_from_counts, valid_steps

__all__ = [
    "GATES",
    "CostAccumulator",
    "CostReport",
    "DeltaModule",
    "LayerCost",
    "StepCost",
    "compute_speedup_bound",
    "layer_cost_from_counts",
    "layer_step_cost",
    "matvec_cost",
    "measure",
    "memory_speedup_bound",
    "product_cost",
    "valid_steps",
]
