"""Single-step delta cells: ``torch.nn.GRUCell`` / ``LSTMCell`` with an explicit stream state.

Shape legend: B batch, I ``input_size``, H ``hidden_size``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ShapeError
from . import validate as V
from .call_plan import planned_call
from .rnn import DeltaGRU, DeltaLSTM, LayerState, ThresholdAttribute


class _CellMixin:
    """A cell is a one-layer delta RNN run one step at a time; parameters keep torch's cell names."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        theta_x: V.ThetaLike = 0.0,
        theta_h: V.ThetaLike = 0.0,
        backend: str = "auto",
        deterministic: bool = False,
    ) -> None:
        # torch's cell signature, on a one-layer module
        super().__init__(
            input_size,
            hidden_size,
            1,
            bias,
            device=device,
            dtype=dtype,
            theta_x=theta_x,
            theta_h=theta_h,
            backend=backend,
            deterministic=deterministic,
        )

    @staticmethod
    def _param_name(name: str, k: int) -> str:
        return name

    _is_cell = True  # module.streamer(): one layer state in and out, (I,) frames taken

    # A cell has one layer: its thresholds are tensors, not one-element tuples.
    theta_x = ThresholdAttribute("x", single=True)
    theta_h = ThresholdAttribute("h", single=True)

    def _step(self, input: Tensor, state, hx_fields: int):
        fresh = state is None
        if (
            (fresh or isinstance(state, LayerState))
            and isinstance(input, Tensor)
            and input.dim() in (1, 2)
        ):
            # a stream under way or starting: the module's plan, when the call fits one
            # (nn/call_plan.py)
            batched = input.dim() == 2
            batch = input.shape[0] if batched else 1
            frame = (batch, self.input_size) if batched else (self.input_size,)
            out = (batch, self.hidden_size) if batched else (self.hidden_size,)
            states = None if fresh else (state,)
            planned = batch and planned_call(self, input, batch, frame, states, False, out)
            if planned:
                return planned[0], planned[1][0]
        if not isinstance(input, Tensor) or input.dim() not in (1, 2):
            raise ShapeError(
                f"input must be 1-D (input_size,) unbatched or 2-D (B, input_size), got "
                f"{tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__}"
            )
        unbatched = input.dim() == 1
        x = input.reshape(1, 1, -1) if unbatched else input.unsqueeze(0)
        x, _ = V.check_input(x, self.input_size, self._like, batch_first=False)
        batch = x.shape[1]
        if (
            state is None
            or isinstance(state, (Tensor, tuple))
            and not isinstance(state, LayerState)
        ):
            state = self._state_from_hx(state, batch, unbatched, hx_fields)
        self._check_state((state,), batch)
        out, new_states, _ = self._run(x, (state,), count=False)
        h = out[0, 0] if unbatched else out[0]
        return h, new_states[0]

    def _state_from_hx(self, hx, batch: int, unbatched: bool, hx_fields: int) -> LayerState:
        if hx is None:
            return self.initial_state(batch)[0]
        tensors = (hx,) if isinstance(hx, Tensor) else tuple(hx)
        if len(tensors) != hx_fields:
            raise ShapeError(
                f"hx must be {hx_fields} tensor(s) of shape (B, hidden_size), got {len(tensors)}"
            )
        expected = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
        for i, t in enumerate(tensors):
            V.check_shape(t, f"hx[{i}]" if hx_fields > 1 else "hx", expected, self._like)
        stacked = [t.reshape(1, batch, self.hidden_size) for t in tensors]
        return self.initial_state(batch, *stacked)[0]


class DeltaGRUCell(_CellMixin, DeltaGRU):
    r"""One step of a delta GRU with an explicit state (equations as :class:`DeltaGRU`).

    Args:
        input_size, hidden_size, bias, device, dtype: as ``torch.nn.GRUCell``.
        theta_x, theta_h: thresholds, floats or per-feature tensors.
        backend: as :class:`DeltaGRU`.

    Inputs: ``input, state``
        input: (B, I) or (I,) unbatched.
        state: a :class:`~deltarnn.functional.DeltaGRUState` from the previous step, a tensor
        h (B, H) / (H,) to start a fresh stream from (x̂ = ĥ = 0), or ``None``.

    Outputs: ``h, state``: h (B, H) or (H,), and the state to pass to the next step.
    """

    def forward(self, input: Tensor, state=None):
        """One step: ``h, state = cell(x, state)`` (see the class docstring for the shapes)."""
        return self._step(input, state, hx_fields=1)


class DeltaLSTMCell(_CellMixin, DeltaLSTM):
    r"""One step of a delta LSTM with an explicit state (equations as :class:`DeltaLSTM`).

    Inputs: ``input, state``: input (B, I) or (I,); state a
    :class:`~deltarnn.functional.DeltaLSTMState`, a tuple ``(h, c)`` to start from, or ``None``.

    Outputs: ``h, state``.
    """

    def forward(self, input: Tensor, state=None):
        """One step: ``h, state = cell(x, state)`` (see the class docstring for the shapes)."""
        return self._step(input, state, hx_fields=2)
