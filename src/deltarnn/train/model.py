"""The trained model: features -> delta RNN layers -> linear head, and the methods wired into it.

Shape legend: T frames, B batch, F features, H hidden units, C classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..functional import DeltaCounts
from ..nn import DeltaGRU, DeltaLSTM
from .config import MethodConfig, ModelConfig
from .methods import (
    Compose,
    FixedPointRound,
    GaussianNoise,
    LearnableDeltaEncoder,
    valid_mask,
)


class _LayerDispatch(nn.Module):
    """x/h transforms that run per-layer learnable encoders after the shared method transforms.

    A delta module calls ``x_transform`` once per layer, in order, then ``h_transform`` once per
    step of that layer; the call order tells which layer is running.
    """

    def __init__(self, base: nn.Module | None, encoders: nn.ModuleList | None, layers: int):
        super().__init__()
        self.base = base
        self.encoders = encoders
        self.layers = layers
        self._calls = 0
        self.layer = 0

    def forward(self, x: Tensor) -> Tensor:
        # input side: a whole (T, B, I) sequence of the next layer
        self.layer = self._calls % self.layers
        self._calls += 1
        if self.base is not None:
            x = self.base(x)
        if self.encoders is not None:
            self.encoders[2 * self.layer + 1].reset()
            x = self.encoders[2 * self.layer](x)
        return x

    def h(self, h: Tensor) -> Tensor:
        if self.base is not None:
            h = self.base(h)
        if self.encoders is not None:
            h = self.encoders[2 * self.layer + 1](h)
        return h


class SequenceModel(nn.Module):
    """A delta RNN with a linear head for classification (pooled) or CTC (per frame).

    Args:
        model: architecture and thresholds.
        input_size: F.
        num_classes: C (for CTC, including the blank at index 0).
        per_frame: return (T, B, C) log-probabilities for CTC instead of (B, C) logits.

    Inputs: ``x`` (T, B, F), ``lengths`` (B,) int64.
    Outputs: logits (B, C), or log-probabilities (T, B, C) with ``per_frame``; with
    ``count=True`` also the per-layer :class:`~deltarnn.functional.DeltaCounts`.
    """

    def __init__(
        self, model: ModelConfig, input_size: int, num_classes: int, per_frame: bool = False
    ) -> None:
        super().__init__()
        cls = DeltaGRU if model.kind == "gru" else DeltaLSTM
        self.config = model
        self.per_frame = per_frame
        self.rnn = cls(
            input_size,
            model.hidden_size,
            model.num_layers,
            theta_x=model.theta_x,
            theta_h=model.theta_h,
            backend=model.backend,
        )
        self.head = nn.Linear(model.hidden_size, num_classes)
        self.dispatch: _LayerDispatch | None = None

    # -- methods -------------------------------------------------------------------------------

    def apply_method(self, method: MethodConfig) -> None:
        """Install the method's transforms (noise, rounding, learnable Θ) on the RNN."""
        parts: list[nn.Module] = []
        if method.noise_sigma:
            parts.append(GaussianNoise(method.noise_sigma))
        if method.rounding:
            parts.append(FixedPointRound(method.int_bits, method.frac_bits))
        base = None if not parts else (parts[0] if len(parts) == 1 else Compose(parts))
        encoders = None
        if method.learnable_theta:
            encoders = nn.ModuleList()
            for k in range(self.rnn.num_layers):
                theta_x, theta_h = self.rnn.thresholds(k)
                encoders.append(LearnableDeltaEncoder(theta_x.detach().clone()))
                encoders.append(LearnableDeltaEncoder(theta_h.detach().clone()))
            self.rnn.set_thresholds(0.0, 0.0)  # the encoders do the thresholding now
        if base is None and encoders is None:
            self.dispatch = None
            self.rnn.x_transform = self.rnn.h_transform = None
            return
        self.dispatch = _LayerDispatch(base, encoders, self.rnn.num_layers)
        # Plain callables (not submodules of the RNN), so the RNN's state_dict stays torch's.
        self.rnn.x_transform = self.dispatch.__call__
        self.rnn.h_transform = self.dispatch.h

    def learnable_encoders(self) -> list[LearnableDeltaEncoder]:
        if self.dispatch is None or self.dispatch.encoders is None:
            return []
        return list(self.dispatch.encoders)

    def bake_thresholds(self) -> None:
        """Move learned Θ into the RNN's threshold buffers and drop the learnable encoders."""
        encoders = self.learnable_encoders()
        if not encoders:
            return
        with torch.no_grad():
            theta_x = [encoders[2 * k].theta.detach().clone() for k in range(self.rnn.num_layers)]
            theta_h = [
                encoders[2 * k + 1].theta.detach().clone() for k in range(self.rnn.num_layers)
            ]
        base = self.dispatch.base
        self.dispatch = None
        self.rnn.set_thresholds(theta_x, theta_h)
        if base is None:
            self.rnn.x_transform = self.rnn.h_transform = None
        else:
            self.dispatch = _LayerDispatch(base, None, self.rnn.num_layers)
            self.rnn.x_transform = self.dispatch.__call__
            self.rnn.h_transform = self.dispatch.h

    # -- running -------------------------------------------------------------------------------

    def _dense_fast_path(self) -> bool:
        """Θ = 0 everywhere and no transform: torch's fused GRU/LSTM computes the same function."""
        if self.rnn.x_transform is not None or self.rnn.h_transform is not None:
            return False
        return all(
            not bool(t.any()) for k in range(self.rnn.num_layers) for t in self.rnn.thresholds(k)
        )

    def run_rnn(self, x: Tensor, count: bool = False) -> tuple[Tensor, list[DeltaCounts] | None]:
        """(T, B, F) -> (T, B, H) and, with ``count``, the counts of each layer."""
        if self.dispatch is not None:
            self.dispatch._calls = 0
        if not count and self._dense_fast_path():
            return _torch_rnn(self.rnn, x), None
        if count:
            out, _, counts = self.rnn.stream(x, count=True)
            return out, counts
        out, _ = self.rnn(x)
        return out, None

    def forward(self, x: Tensor, lengths: Tensor, count: bool = False):
        out, counts = self.run_rnn(x, count)
        if self.per_frame:
            y = torch.log_softmax(self.head(out), dim=-1)
        else:
            y = self.head(pool(out, lengths, self.config.pool))
        return (y, counts) if count else y

    def occupancy_cost(self, lengths: Tensor) -> Tensor:
        """Mean surrogate send probability of the learnable encoders (0 without them)."""
        encoders = self.learnable_encoders()
        if not encoders:
            return self.head.weight.new_zeros(())
        return torch.stack([e.soft_occupancy(lengths) for e in encoders]).mean()


def pool(out: Tensor, lengths: Tensor, how: str) -> Tensor:
    """(T, B, H) -> (B, H): mean over the valid frames, or the last valid frame."""
    lengths = lengths.to(out.device)
    if how == "last":
        return out[lengths - 1, torch.arange(out.shape[1], device=out.device)]
    mask = valid_mask(lengths, out.shape[0], out.shape[1]).to(out.dtype)
    return (out * mask[..., None]).sum(0) / lengths.clamp_min(1)[:, None].to(out.dtype)


def _torch_rnn(rnn: DeltaGRU | DeltaLSTM, x: Tensor) -> Tensor:
    """Run the RNN's parameters through torch's fused kernel (the Θ = 0 delta net is exactly it)."""
    weights = []
    for k in range(rnn.num_layers):
        weights.extend(w for w in rnn.layer_weights(k) if w is not None)
    zeros = x.new_zeros(rnn.num_layers, x.shape[1], rnn.hidden_size)
    args = (weights, rnn.bias, rnn.num_layers, rnn.dropout, rnn.training, False, False)
    if rnn.mode == "GRU":
        out, _ = torch._VF.gru(x, zeros, *args)
    else:
        out, _, _ = torch._VF.lstm(x, (zeros, zeros), *args)
    return out
