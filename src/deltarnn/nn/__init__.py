"""torch.nn modules for delta networks, their stream states, and conversion from/to torch."""

from ..functional import DeltaGRUState, DeltaLSTMState
from .cells import DeltaGRUCell, DeltaLSTMCell
from .convert import convert, from_torch, revert, to_torch
from .rnn import DeltaGRU, DeltaLSTM, DeltaRNNState

__all__ = [
    "DeltaGRU",
    "DeltaGRUCell",
    "DeltaGRUState",
    "DeltaLSTM",
    "DeltaLSTMCell",
    "DeltaLSTMState",
    "DeltaRNNState",
    "convert",
    "from_torch",
    "revert",
    "to_torch",
]
