"""torch.nn modules for delta networks, their stream states, and conversion from/to torch."""

from ..functional import DeltaGRUState, DeltaLSTMState
from .cells import DeltaGRUCell, DeltaLSTMCell
from .convert import convert, from_torch, revert, to_torch
from .rnn import DeltaGRU, DeltaLSTM, DeltaRNNState
from .state_file import load_state, save_state
from .streamer import Streamer

__all__ = [
    "DeltaGRU",
    "DeltaGRUCell",
    "DeltaGRUState",
    "DeltaLSTM",
    "DeltaLSTMCell",
    "DeltaLSTMState",
    "DeltaRNNState",
    "Streamer",
    "convert",
    "from_torch",
    "load_state",
    "revert",
    "save_state",
    "to_torch",
]
