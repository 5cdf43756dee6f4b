"""A delta RNN (and linear head) rebuilt from a bare state_dict, for export from a weights file.

Accepted layouts: a :class:`~deltarnn.DeltaGRU` / ``DeltaLSTM`` (or ``torch.nn.GRU``/``LSTM``)
state_dict (``weight_ih_l0``, ...; thresholds ``theta_x_l0`` ... if saved from a delta module,
else 0), one of a cell (``weight_ih``, ...), or a trained model's (``rnn.`` prefix, optional
``head.weight``/``head.bias``). Sizes, layer count, GRU or LSTM (3H or 4H rows) and bias are read
from the shapes; everything else must be absent.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DTypeError, ShapeError, ThresholdError
from ..nn import DeltaGRU, DeltaGRUCell, DeltaLSTM, DeltaLSTMCell


class RNNWithHead(nn.Module):
    """A delta RNN and a linear head applied to every frame (what an export of a trained model
    holds when only its weights are known)."""

    def __init__(self, rnn: DeltaGRU | DeltaLSTM, head: nn.Linear | None) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = head


def module_from_state_dict(state: dict[str, Tensor], name: str = "state_dict") -> nn.Module:
    """Rebuild the module a state_dict came from (see the module docstring).

    Args:
        state: parameter and buffer tensors by name, as ``module.state_dict()`` returns them.
        name: what to call the source in error messages (e.g. the file name).

    Raises:
        ConfigError: keys of an unsupported model (bidirectional ``*_reverse``, ``weight_hr``
            projections) or unknown keys. ShapeError: inconsistent shapes. DTypeError: tensors
            that are not float32 (a cast would be silent).
    """
    for key, t in state.items():
        if t.dtype != torch.float32:
            raise DTypeError(f"{name}: {key} must be float32, got {t.dtype}")
    rnn_keys = {k.removeprefix("rnn."): v for k, v in state.items() if not k.startswith("head.")}
    head_keys = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    if any(k.endswith("_reverse") for k in rnn_keys):
        raise ConfigError(f"{name}: a bidirectional RNN cannot be exported (keys *_reverse)")
    if any(k.startswith("weight_hr") for k in rnn_keys):
        raise ConfigError(f"{name}: LSTM projections (proj_size, weight_hr_l*) cannot be exported")
    rnn = _rnn(rnn_keys, name)
    _set_thresholds(rnn, rnn_keys, name)
    _load(rnn, rnn_keys, name)
    if not head_keys:
        return rnn
    if "weight" not in head_keys or head_keys["weight"].dim() != 2:
        raise ShapeError(f"{name}: head.weight must be a 2-D (C, H) tensor")
    classes, hidden = head_keys["weight"].shape
    head = nn.Linear(hidden, classes, bias="bias" in head_keys)
    _load(head, head_keys, f"{name} (head)")
    return RNNWithHead(rnn, head)


def _rnn(keys: dict[str, Tensor], name: str) -> DeltaGRU | DeltaLSTM:
    cell = "weight_hh" in keys
    w_hh = keys.get("weight_hh" if cell else "weight_hh_l0")
    w_ih = keys.get("weight_ih" if cell else "weight_ih_l0")
    if w_hh is None or w_ih is None or w_hh.dim() != 2 or w_ih.dim() != 2:
        raise ShapeError(
            f"{name}: needs 2-D weight_ih_l0 (G*H, I) and weight_hh_l0 (G*H, H) (or a cell's "
            f"weight_ih/weight_hh), holds {sorted(keys)}"
        )
    rows, hidden = w_hh.shape
    if hidden == 0 or rows not in (3 * hidden, 4 * hidden):
        raise ShapeError(
            f"{name}: weight_hh must be (3H, H) for a GRU or (4H, H) for an LSTM, got "
            f"{tuple(w_hh.shape)}"
        )
    gru = rows == 3 * hidden
    bias = ("bias_ih" if cell else "bias_ih_l0") in keys
    inputs = w_ih.shape[1]
    if cell:
        return (DeltaGRUCell if gru else DeltaLSTMCell)(inputs, hidden, bias)
    layers = 1 + max(int(m.group(1)) for k in keys if (m := re.fullmatch(r"weight_ih_l(\d+)", k)))
    return (DeltaGRU if gru else DeltaLSTM)(inputs, hidden, layers, bias)


def _set_thresholds(rnn: DeltaGRU | DeltaLSTM, keys: dict[str, Tensor], name: str) -> None:
    """Thresholds first (checked, and scalar or per feature as saved), so loading can copy them."""
    for kind in "xh":
        names = [f"theta_{kind}_l{k}" for k in range(rnn.num_layers)]
        if any(n in keys for n in names):
            if not all(n in keys for n in names):
                raise ConfigError(f"{name}: has some of {names} but not all")
            try:
                rnn.set_thresholds(**{f"theta_{kind}": [keys[n] for n in names]})
            except ThresholdError as exc:
                raise ThresholdError(f"{name}: {exc}") from exc


def _load(module: nn.Module, keys: dict[str, Tensor], name: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(keys, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise ShapeError(f"{name}: {exc}") from exc
    if missing or unexpected:
        raise ConfigError(
            f"{name}: does not match a {type(module).__name__}: missing {missing}, "
            f"unexpected {unexpected}"
        )
