"""The accountant: the paper's analytic cost model and counts from observed send masks."""

from .measure import measure
from .model import GATES, StepCost, layer_step_cost, matvec_cost, speedup_bound
from .report import CostReport, LayerCost, layer_cost_from_counts

__all__ = [
    "GATES",
    "CostReport",
    "LayerCost",
    "StepCost",
    "layer_cost_from_counts",
    "layer_step_cost",
    "matvec_cost",
    "measure",
    "speedup_bound",
]
