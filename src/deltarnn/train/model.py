"""The trained model: features -> delta RNN layers -> linear head, and the methods wired into it.

Every model the engine trains and evaluates has the same surface: an ``rnn`` attribute (the
delta module whose cost is counted) and ``run(x, lengths, count=False) -> ModelOutput``.

Shape legend: T frames, B batch, F features, H hidden units, C classes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import DeltaCounts
from ..nn import DeltaGRU, DeltaLSTM
from .config import MethodConfig, ModelConfig
from .methods import Compose, FixedPointRound, GaussianNoise, LearnableDeltaEncoder, valid_mask


class ModelOutput(NamedTuple):
    """What a model run returns.

    Attributes:
        y: the model's output (logits (B, C), log-probabilities (T, B, C), predictions, ...).
        counts: per-layer :class:`~deltarnn.functional.DeltaCounts` when run with ``count``.
        soft_occupancy: the learnable encoders' surrogate send probability (a 0-d tensor, 0
            without learnable thresholds), for the occupancy cost.
    """

    y: Tensor
    counts: list[DeltaCounts] | None
    soft_occupancy: Tensor


def run_rnn(
    rnn: DeltaGRU | DeltaLSTM, x: Tensor, *, count: bool = False
) -> tuple[Tensor, list[DeltaCounts] | None]:
    """(T, B, I) -> (T, B, H) and, with ``count``, each layer's counts.

    With Θ = 0 everywhere and no transform the delta network computes exactly torch's GRU/LSTM,
    so uncounted runs take torch's fused kernel; everything else runs the module (the fastest
    backend for the call: ``fused`` with gradients, ``cpu``/``triton`` without).
    """
    if count:
        out, _, counts = rnn.stream(x, count=True)
        return out, counts
    if _is_dense(rnn):
        return _torch_rnn(rnn, x), None
    out, _ = rnn(x)
    return out, None


def _is_dense(rnn: DeltaGRU | DeltaLSTM) -> bool:
    if rnn.transforms != (None, None):
        return False
    return all(not bool(t.any()) for k in range(rnn.num_layers) for t in rnn.thresholds(k))


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


class _LearnableRun:
    """The transforms of one forward pass with learnable thresholds.

    Layer k's input encoder is ``encoders[2k]``, its recurrent encoder ``encoders[2k + 1]``. The
    recurrent encoder's state (the last value sent) and the surrogate sends live in this object,
    which exists for one pass only: nothing is left on the modules.
    """

    def __init__(self, base: nn.Module | None, encoders: nn.ModuleList) -> None:
        self.base, self.encoders = base, encoders
        self.h_hat: dict[int, Tensor] = {}
        self.soft: list[Tensor] = []
        self.soft_h: dict[int, list[Tensor]] = {}

    def x(self, x: Tensor, layer: int) -> Tensor:
        if self.base is not None:
            x = self.base(x)
        x_hat, _, soft = self.encoders[2 * layer](x)
        self.soft.append(soft)
        return x_hat

    def h(self, h: Tensor, layer: int) -> Tensor:
        if self.base is not None:
            h = self.base(h)
        h_hat, soft = self.encoders[2 * layer + 1].step(h, self.h_hat.get(layer))
        self.h_hat[layer] = h_hat
        self.soft_h.setdefault(layer, []).append(soft)
        return h_hat

    def soft_occupancy(self, lengths: Tensor | None) -> Tensor:
        softs = self.soft + [torch.stack(s) for s in self.soft_h.values()]
        return torch.stack([LearnableDeltaEncoder.soft_occupancy(s, lengths) for s in softs]).mean()


class SequenceModel(nn.Module):
    """A delta RNN with a linear head for classification (pooled), CTC or regression (per frame).

    Args:
        model: architecture and thresholds.
        input_size: F.
        num_classes: C (for CTC, including the blank at index 0).
        per_frame: return (T, B, C) log-probabilities for CTC instead of (B, C) logits.
        regression: with ``per_frame``, return the head's (T, B, C) outputs as they are (no
            log-softmax): per-frame regression.

    Inputs: ``x`` (T, B, F), ``lengths`` (B,) int64.
    Outputs: :meth:`run` returns a :class:`ModelOutput`; ``forward`` its ``y``: logits (B, C),
    or log-probabilities (T, B, C) with ``per_frame`` (outputs (T, B, C) with ``regression``).
    """

    def __init__(
        self,
        model: ModelConfig,
        input_size: int,
        num_classes: int,
        per_frame: bool = False,
        regression: bool = False,
    ) -> None:
        super().__init__()
        if regression and not per_frame:
            raise ConfigError("regression=True needs per_frame=True (one output per frame)")
        cls = DeltaGRU if model.kind == "gru" else DeltaLSTM
        self.config = model
        self.per_frame = per_frame
        self.regression = regression
        self.rnn = cls(
            input_size,
            model.hidden_size,
            model.num_layers,
            theta_x=model.theta_x,
            theta_h=model.theta_h,
            backend=model.backend,
            dropout=model.dropout,
        )
        self.head = nn.Linear(model.hidden_size, num_classes)
        self.transform: nn.Module | None = None  # noise and rounding, every layer alike
        self.encoders: nn.ModuleList | None = None  # learnable thresholds, two per layer

    # -- methods -------------------------------------------------------------------------------

    def apply_method(self, method: MethodConfig) -> None:
        """Install the method's transforms (noise, rounding, learnable Θ) on the RNN."""
        parts: list[nn.Module] = []
        if method.noise_sigma:
            parts.append(GaussianNoise(method.noise_sigma))
        if method.rounding:
            parts.append(FixedPointRound(method.int_bits, method.frac_bits))
        self.transform = None if not parts else (parts[0] if len(parts) == 1 else Compose(parts))
        self.encoders = None
        if method.learnable_theta:
            self.encoders = nn.ModuleList()
            for k in range(self.rnn.num_layers):
                theta_x, theta_h = self.rnn.thresholds(k)
                self.encoders.append(LearnableDeltaEncoder(theta_x.detach().clone()))
                self.encoders.append(LearnableDeltaEncoder(theta_h.detach().clone()))
            self.encoders.to(self.head.weight.device)
            self.rnn.set_thresholds(0.0, 0.0)  # the encoders do the thresholding now
        self._install_shared_transform()

    def _install_shared_transform(self) -> None:
        """The stateless noise/rounding transform, the same at every layer (or none)."""
        t = self.transform
        if t is None:
            self.rnn.set_transforms(None, None)
        else:
            self.rnn.set_transforms(lambda v, layer: t(v), lambda v, layer: t(v))

    def learnable_encoders(self) -> list[LearnableDeltaEncoder]:
        return [] if self.encoders is None else list(self.encoders)

    def bake_thresholds(self) -> None:
        """Move learned Θ into the RNN's threshold buffers and drop the learnable encoders."""
        encoders = self.learnable_encoders()
        if not encoders:
            return
        layers = range(self.rnn.num_layers)
        with torch.no_grad():
            theta_x = [encoders[2 * k].theta.detach().clone() for k in layers]
            theta_h = [encoders[2 * k + 1].theta.detach().clone() for k in layers]
        self.encoders = None
        self.rnn.set_thresholds(theta_x, theta_h)

    # -- running -------------------------------------------------------------------------------

    def run(self, x: Tensor, lengths: Tensor, count: bool = False) -> ModelOutput:
        """Run on (T, B, F); ``count`` also returns each layer's counts."""
        learnable = None
        if self.encoders is not None:
            learnable = _LearnableRun(self.transform, self.encoders)
            self.rnn.set_transforms(learnable.x, learnable.h)
        try:
            out, counts = run_rnn(self.rnn, x, count=count)
        finally:
            if learnable is not None:
                self._install_shared_transform()
        if self.regression:
            y = self.head(out)
        elif self.per_frame:
            y = torch.log_softmax(self.head(out), dim=-1)
        else:
            y = self.head(pool(out, lengths, self.config.pool))
        soft = (
            self.head.weight.new_zeros(())
            if learnable is None
            else learnable.soft_occupancy(lengths.to(out.device))
        )
        return ModelOutput(y, counts, soft)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.run(x, lengths).y


def pool(out: Tensor, lengths: Tensor, how: str) -> Tensor:
    """(T, B, H) -> (B, H): mean over the valid frames, or the last valid frame."""
    lengths = lengths.to(out.device)
    if how == "last":
        return out[lengths - 1, torch.arange(out.shape[1], device=out.device)]
    mask = valid_mask(lengths, out.shape[0], out.shape[1]).to(out.dtype)
    return (out * mask[..., None]).sum(0) / lengths.clamp_min(1)[:, None].to(out.dtype)
