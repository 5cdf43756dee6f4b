"""Training methods of the paper (Neil et al., ICML 2017, §3) and two extensions.

Each method acts through the transforms a delta module takes
(:meth:`~deltarnn.DeltaGRU.set_transforms`): one applied to a layer's input sequence before it
is delta-encoded, one to h_{t-1}, the value the recurrent product sees. Methods are
``nn.Module``\\ s so ``model.train()`` / ``model.eval()`` reach them;
:class:`~deltarnn.train.SequenceModel` wires them per layer.

Shape legend: T time steps, B batch, F features (I for inputs, H hidden units).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import DeltaCounts

# More bits than a float64 mantissa holds round nothing; far more overflow 2.0**bits.
MAX_BITS = 52


class _FixedPointRound(torch.autograd.Function):
    """Round to the grid ``2**-frac_bits`` and saturate to ``[lo, hi]``; straight-through backward.

    Backward passes the gradient unchanged where the input lies inside ``[lo, hi]`` and blocks it
    where the forward saturated (the derivative of the clamp), ignoring the rounding steps.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: float, lo: float, hi: float) -> Tensor:
        inside = (x >= lo) & (x <= hi)
        ctx.save_for_backward(inside)
        return torch.clamp(torch.round(x * scale) / scale, lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None, None


def fixed_point_range(int_bits: int, frac_bits: int) -> tuple[float, float]:
    """The representable range of signed Qm.f: ``[-2**m, 2**m - 2**-f]``."""
    return -(2.0**int_bits), 2.0**int_bits - 2.0**-frac_bits


def quantize(x: Tensor, int_bits: int, frac_bits: int) -> Tensor:
    r"""Round ``x`` to signed fixed point Qm.f (m = ``int_bits``, f = ``frac_bits``), saturating.

    .. math::
        q(x) = \mathrm{clamp}(2^{-f} \lfloor 2^f x \rceil, -2^m, 2^m - 2^{-f}), \qquad
        \partial q / \partial x = 1[-2^m \le x \le 2^m - 2^{-f}]  \text{ (straight through)}

    Args:
        x: any shape.
        int_bits: m >= 0, integer bits (the sign bit is extra).
        frac_bits: f >= 0, fractional bits.
    """
    if not (0 <= int_bits <= MAX_BITS and 0 <= frac_bits <= MAX_BITS):
        raise ConfigError(
            f"int_bits and frac_bits must be in [0, {MAX_BITS}], got {int_bits}, {frac_bits}"
        )
    lo, hi = fixed_point_range(int_bits, frac_bits)
    return _FixedPointRound.apply(x, float(2.0**frac_bits), lo, hi)


class FixedPointRound(nn.Module):
    """Transform rounding activations to Qm.f in the forward pass, in training and evaluation."""

    def __init__(self, int_bits: int = 3, frac_bits: int = 5) -> None:
        super().__init__()
        quantize(torch.zeros(1), int_bits, frac_bits)  # validates the arguments
        self.int_bits, self.frac_bits = int(int_bits), int(frac_bits)

    def forward(self, x: Tensor) -> Tensor:
        return quantize(x, self.int_bits, self.frac_bits)

    def extra_repr(self) -> str:
        return f"Q{self.int_bits}.{self.frac_bits}"


class GaussianNoise(nn.Module):
    """Transform adding N(0, sigma^2) to the inputs of the products, in training mode only."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ConfigError(f"sigma must be finite and >= 0, got {sigma}")
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.sigma == 0:
            return x
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class Compose(nn.Module):
    """Apply transforms in order (e.g. noise, then rounding)."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x


def threshold_schedule(epoch: float, target: float, warmup_epochs: float) -> float:
    """Linear warm-up of a threshold: ``target * min(1, epoch / warmup_epochs)``.

    ``epoch`` may be fractional (progress within an epoch); ``warmup_epochs = 0`` means no ramp.
    """
    if warmup_epochs < 0:
        raise ConfigError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if warmup_epochs == 0:
        return float(target)
    return float(target) * min(1.0, max(0.0, epoch / warmup_epochs))


def valid_mask(lengths: Tensor | None, steps: int, batch: int) -> Tensor:
    """(T, B) bool mask of the steps inside each sequence (all true without ``lengths``)."""
    if lengths is None:
        return torch.ones(steps, batch, dtype=torch.bool)
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]


def delta_l1_cost(
    counts: Sequence[DeltaCounts],
    lengths: Tensor | None = None,
    weight_x: float = 0.0,
    weight_h: float = 0.0,
    frames: float | None = None,
) -> Tensor:
    r"""L1 cost of the deltas, summed over layers and valid steps, per frame.

    .. math::
        C = \frac{1}{N} \sum_{\text{layers}} \sum_{t < T_b} \left(
            \lambda_x \lVert \Delta x_{t,b} \rVert_1 + \lambda_h \lVert \Delta h_{t,b} \rVert_1
        \right)

    Args:
        counts: one :class:`~deltarnn.functional.DeltaCounts` per layer, with ``abs_x`` and
            ``abs_h`` (T, B) filled (the reference backend does).
        lengths: (B,) valid lengths; padded steps do not count.
        weight_x, weight_h: λx and λh.
        frames: N, the normaliser; default the number of valid frames in this batch. Data-parallel
            training passes the global batch's frame count so the summed gradients are exact.
    """
    if not counts:
        raise ConfigError("counts is empty: run the module with count=True")
    first = counts[0]
    if first.abs_x is None or first.abs_h is None:
        raise ConfigError("counts carry no abs_x/abs_h: run on the reference backend")
    steps, batch = first.abs_x.shape
    mask = valid_mask(lengths, steps, batch).to(first.abs_x.device, first.abs_x.dtype)
    n = mask.sum() if frames is None else torch.as_tensor(frames, dtype=mask.dtype)
    total = first.abs_x.new_zeros(())
    for c in counts:
        if weight_x:
            total = total + weight_x * (c.abs_x * mask).sum()
        if weight_h:
            total = total + weight_h * (c.abs_h * mask).sum()
    return total / n.clamp_min(1)


class LearnableDeltaEncoder(nn.Module):
    r"""Delta encoding with a learnable threshold, run as a transform (beyond the paper).

    The value a delta product sees is x̂_t, the last value sent; x̂_t - x_t lies within ±Θ. This
    module computes x̂ itself and hands it to the layer, whose own threshold is then set to 0 (a
    piecewise-constant x̂ sends exactly where it changes, so the masks and counts are the same).
    Θ gets two gradients:

    * from the task loss, a straight-through estimate in the manner of LSQ's step size:
      ∂x̂_t/∂Θ = (x̂_t - x_t)/Θ, the error pattern scaled linearly with Θ;
    * from :meth:`soft_occupancy`, a sigmoid surrogate of the send mask,
      s_t = σ((|x_t - x̂_{t-1}| - Θ)/(τΘ)), which a cost weight trades against the task loss.

    Θ is stored as ``log Θ`` so it stays positive. The module keeps no stream state: x̂ is passed
    in and returned (:meth:`step` for one step, :meth:`forward` for a sequence).

    Args:
        theta: initial Θ, > 0, a float or a (F,) tensor.
        tau: temperature of the sigmoid surrogate, in units of Θ.

    Shape: x (B, F) per step or (T, B, F) per sequence; x̂ (B, F).
    """

    def __init__(self, theta: float | Tensor, tau: float = 0.25) -> None:
        super().__init__()
        theta = torch.as_tensor(theta, dtype=torch.get_default_dtype())
        if not bool((theta > 0).all()):
            raise ConfigError(f"a learnable threshold must start > 0, got {theta}")
        self.log_theta = nn.Parameter(theta.log())
        self.tau = float(tau)

    @property
    def theta(self) -> Tensor:
        return self.log_theta.exp()

    def step(self, x: Tensor, x_hat: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode one step from the last value sent ``x_hat`` (``None``: a fresh stream, zeros).

        Returns:
            ``(x̂_t, s_t)``: the new last-sent value (B, F), carrying the straight-through
            gradient to Θ, which is also the state for the next step; and the surrogate send
            probability (B, F).
        """
        theta = self.theta.to(x.dtype)
        x_hat = torch.zeros_like(x) if x_hat is None else x_hat
        diff = x - x_hat
        send = diff.detach().abs() > theta.detach()
        new_hat = torch.where(send, x, x_hat)
        # Straight-through: value new_hat, gradient (new_hat - x)/Θ · dΘ on top of the spec's.
        err = ((new_hat - x) / theta).detach()
        new_hat = new_hat + err * theta - (err * theta).detach()
        soft = torch.sigmoid((diff.detach().abs() - theta) / (self.tau * theta))
        return new_hat, soft

    def forward(self, x: Tensor, x_hat: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Encode a sequence (T, B, F) from ``x_hat``.

        Returns:
            ``(x̂ per step (T, B, F), x̂ after the last step (B, F), s per step (T, B, F))``.
        """
        hats, softs = [], []
        for t in range(x.shape[0]):
            x_hat, soft = self.step(x[t], x_hat)
            hats.append(x_hat)
            softs.append(soft)
        if not hats:
            empty = x.new_zeros(x.shape)
            return empty, (x.new_zeros(x.shape[1:]) if x_hat is None else x_hat), empty
        return torch.stack(hats), x_hat, torch.stack(softs)

    @staticmethod
    def soft_occupancy(soft: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Mean surrogate send probability s (T, B, F) over valid steps and features."""
        mask = valid_mask(lengths, soft.shape[0], soft.shape[1]).to(soft.device, soft.dtype)
        return (soft.mean(-1) * mask).sum() / mask.sum().clamp_min(1)
