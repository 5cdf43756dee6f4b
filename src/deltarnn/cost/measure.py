"""``measure``: run a delta module once and count what it sent."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn import DeltaRNNState
from .report import CostReport, require_delta_module


def measure(
    module: nn.Module,
    input: Tensor,
    state: DeltaRNNState | None = None,
    *,
    lengths: Tensor | None = None,
    weight_bytes: int | None = None,
    act_bytes: int | None = None,
) -> CostReport:
    """Run ``module`` on ``input`` (without gradients) and report its cost, per layer and in total.

    Occupancies and MACs are counted from the send masks the run produced, not estimated. A run
    that already returned its counts gets the same report from :meth:`CostReport.from_counts`.

    Args:
        module: a :class:`~deltarnn.DeltaGRU`, :class:`~deltarnn.DeltaLSTM` or one of the cells
            (a cell is measured over a sequence, as if stepped).
        input: a sequence laid out as the module expects ((T, B, I), batch first, or unbatched).
        state: optional stream state to start from (fresh by default).
        lengths: optional (B,) valid lengths of padded sequences; padded steps are not counted.
        weight_bytes: bytes per weight (default: the parameters' element size; 1 for 8-bit weights).
        act_bytes: bytes per activation element (default: the parameters' element size).
    """
    require_delta_module(module)
    with torch.no_grad():
        _, _, counts = module.stream(input, state, count=True)
    return CostReport.from_counts(
        module, counts, lengths=lengths, weight_bytes=weight_bytes, act_bytes=act_bytes
    )
