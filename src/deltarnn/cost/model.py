"""The analytic cost model of delta networks (Neil et al. 2017, §2), generalised to GRU/LSTM.

For an n×n matrix-vector product with occupancy o (the fraction of non-zero deltas):

=============  ====================  ==================
               dense                 delta
=============  ====================  ==================
compute        n²                    o·n² + 2n
memory         n² + n                o·n² + 4n
=============  ====================  ==================

The 2n compute overhead is forming and testing the deltas (a subtraction and a comparison per
element); the 4n memory overhead is reading x and x̂ and writing x̂ and Δx. A recurrent layer per
step and sample multiplies a (G·H) × (I + H) matrix (G = 3 for a GRU, 4 for an LSTM) by the
concatenated input and hidden deltas, so n² becomes G·H·(I+H) and n becomes I + H. Element-wise
gate work is O(H) and the same in both, so it is left out of both sides, as in the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GATES = {"GRU": 3, "LSTM": 4}


@dataclass(frozen=True)
class StepCost:
    """Cost of one layer for one step and one sample (counts of operations and of elements)."""

    dense_macs: float
    delta_macs: float
    dense_ops: float
    delta_ops: float
    dense_weight_reads: float
    delta_weight_reads: float
    dense_state_reads: float
    dense_state_writes: float
    delta_state_reads: float
    delta_state_writes: float

    @property
    def compute_speedup(self) -> float:
        return self.dense_ops / self.delta_ops

    def memory_speedup(self, weight_bytes: int = 4, act_bytes: int = 4) -> float:
        dense = self.dense_weight_reads * weight_bytes
        dense += (self.dense_state_reads + self.dense_state_writes) * act_bytes
        delta = self.delta_weight_reads * weight_bytes
        delta += (self.delta_state_reads + self.delta_state_writes) * act_bytes
        return dense / delta

    def to_dict(self) -> dict:
        return asdict(self)


def matvec_cost(n: int, occupancy: float) -> StepCost:
    """The paper's n×n matrix-vector product at occupancy ``o`` (a fraction in [0, 1])."""
    return product_cost(rows=n, columns=n, sent=occupancy * n)


def layer_step_cost(
    kind: str, input_size: int, hidden_size: int, occupancy_x: float, occupancy_h: float
) -> StepCost:
    """Expected cost of one step of a delta GRU or LSTM layer at the given occupancies.

    Args:
        kind: ``"GRU"`` or ``"LSTM"``.
        occupancy_x, occupancy_h: fractions of input and hidden deltas that are non-zero.
    """
    if kind not in GATES:
        raise ValueError(f"kind must be 'GRU' or 'LSTM', got {kind!r}")
    for name, o in (("occupancy_x", occupancy_x), ("occupancy_h", occupancy_h)):
        if not 0.0 <= o <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {o!r}")
    sent = occupancy_x * input_size + occupancy_h * hidden_size
    return product_cost(rows=GATES[kind] * hidden_size, columns=input_size + hidden_size, sent=sent)


def product_cost(rows: int, columns: int, sent: float, steps: int = 1) -> StepCost:
    """The cost formula: ``steps`` products of a (rows × columns) matrix with a delta vector.

    ``sent`` is the number of non-zero deltas summed over the steps (``o · columns`` for one
    step at occupancy o). Every cost in the package comes from here: the analytic model
    (:func:`layer_step_cost`, :func:`matvec_cost`), the counted reports
    (:func:`deltarnn.cost.layer_cost_from_counts`) and the benchmark bounds.
    """
    return StepCost(
        dense_macs=rows * columns * steps,
        delta_macs=rows * sent,
        dense_ops=rows * columns * steps,
        delta_ops=rows * sent + 2 * columns * steps,
        dense_weight_reads=rows * columns * steps,
        delta_weight_reads=rows * sent,
        dense_state_reads=columns * steps,
        dense_state_writes=0,
        delta_state_reads=2 * columns * steps,
        delta_state_writes=2 * columns * steps,
    )


def compute_speedup_bound(
    kind: str, input_size: int, hidden_size: int, occupancy_x: float, occupancy_h: float
) -> float:
    r"""Dense over delta operations of one layer step: the speed-up of a compute-bound step.

    .. math::
        \frac{G H (I + H)}{G H (o_x I + o_h H) + 2 (I + H)}

    G = 3 for a GRU and 4 for an LSTM; the delta side pays 2 operations per input and hidden
    element to form and test the deltas.
    """
    return layer_step_cost(kind, input_size, hidden_size, occupancy_x, occupancy_h).compute_speedup


def memory_speedup_bound(
    kind: str,
    input_size: int,
    hidden_size: int,
    occupancy_x: float,
    occupancy_h: float,
    weight_bytes: int = 4,
    act_bytes: int = 4,
) -> float:
    """Dense over delta bytes moved by one layer step: the speed-up of a memory-bound step.

    At batch 1 a recurrent step reads every weight once and does little else, so its time is
    bounded by the bytes it moves; this is the ratio a fast kernel is measured against.
    """
    cost = layer_step_cost(kind, input_size, hidden_size, occupancy_x, occupancy_h)
    return cost.memory_speedup(weight_bytes, act_bytes)
