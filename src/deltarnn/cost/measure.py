"""``measure``: run a delta module once and count what it sent."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ..nn.rnn import DeltaRNNState, _DeltaRNNBase
from .report import CostReport, layer_cost_from_counts


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

    Occupancies and MACs are counted from the send masks the run produced, not estimated.

    Args:
        module: a :class:`~deltarnn.DeltaGRU`, :class:`~deltarnn.DeltaLSTM` or one of the cells
            (a cell is measured over a sequence, as if stepped).
        input: a sequence laid out as the module expects ((T, B, I), batch first, or unbatched).
        state: optional stream state to start from (fresh by default).
        lengths: optional (B,) valid lengths of padded sequences; padded steps are not counted.
        weight_bytes: bytes per weight (default: the parameters' element size; 1 for 8-bit weights).
        act_bytes: bytes per activation element (default: the parameters' element size).
    """
    if not isinstance(module, _DeltaRNNBase):
        raise ConfigError(
            f"module must be a delta module (convert torch modules with deltarnn.from_torch), "
            f"got {type(module).__name__}"
        )
    like = module.layer_weights(0)[0]
    weight_bytes = like.element_size() if weight_bytes is None else weight_bytes
    act_bytes = like.element_size() if act_bytes is None else act_bytes
    with torch.no_grad():
        _, _, counts = module.stream(input, state, count=True)
    valid = None
    if lengths is not None:
        steps = counts[0].nx.shape[0]
        batch = counts[0].nx.shape[1]
        if lengths.shape != (batch,):
            raise ShapeError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        valid = torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]
        valid = valid.to(counts[0].nx.device)
    layers = []
    for k, c in enumerate(counts):
        features, hidden = module.layer_sizes(k)
        layers.append(
            layer_cost_from_counts(
                k, module.mode, features, hidden, c, weight_bytes, act_bytes, valid
            )
        )
    return CostReport(layers, backend=module.last_backend)
