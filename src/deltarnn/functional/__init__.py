"""The spec: stateless pure-PyTorch delta-RNN math. Imports nothing but torch.

Every fast kernel in :mod:`deltarnn.ops` has these functions as its oracle.
"""

from .delta_encode import delta_encode, delta_step, encode_sequence
from .rnn import (
    count_sends,
    delta_gru,
    delta_lstm,
    gru_initial_memory,
    gru_initial_state,
    lstm_initial_memory,
    lstm_initial_state,
)
from .state import (
    GATES,
    MEMORY_BOUND,
    RESYNC_EVERY,
    DeltaCounts,
    DeltaGRUState,
    DeltaLSTMState,
)

__all__ = [
    "GATES",
    "MEMORY_BOUND",
    "RESYNC_EVERY",
    "DeltaCounts",
    "DeltaGRUState",
    "DeltaLSTMState",
    "count_sends",
    "delta_encode",
    "delta_gru",
    "delta_lstm",
    "delta_step",
    "encode_sequence",
    "gru_initial_memory",
    "gru_initial_state",
    "lstm_initial_memory",
    "lstm_initial_state",
]
