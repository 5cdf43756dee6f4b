"""The cost model's speed-up bound, the yardstick every measured speed-up is divided by.

Kept in this one place so that it can be swapped for the accountant in :mod:`deltarnn.cost`
without touching the harness.
"""

from __future__ import annotations

GATES = {"GRU": 3, "LSTM": 4}


def cost_model_speedup(
    kind: str, input_size: int, hidden_size: int, occupancy_x: float, occupancy_h: float
) -> float:
    """Dense over delta operations of one layer step (Neil et al. 2017, §2, for GRU/LSTM shapes).

    .. math::
        \\text{bound} = \\frac{G H (I + H)}{G H (o_x I + o_h H) + 2 (I + H)}

    G = 3 for a GRU and 4 for an LSTM: dense multiply-accumulates over delta ones, where the delta
    side pays 2 operations per input and hidden element to form and test the deltas.

    Args:
        kind: ``"GRU"`` or ``"LSTM"``.
        occupancy_x, occupancy_h: measured fractions of non-zero input and hidden deltas, in [0, 1].
    """
    if kind not in GATES:
        raise ValueError(f"kind must be 'GRU' or 'LSTM', got {kind!r}")
    for name, o in (("occupancy_x", occupancy_x), ("occupancy_h", occupancy_h)):
        if not 0.0 <= o <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {o!r}")
    rows = GATES[kind] * hidden_size
    dense = rows * (input_size + hidden_size)
    delta = rows * (occupancy_x * input_size + occupancy_h * hidden_size)
    return dense / (delta + 2 * (input_size + hidden_size))
