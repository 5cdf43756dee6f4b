"""Statistics for reporting experiments: mean and sample SD over seeds, bootstrap CIs over seeds
and test items together, paired against the dense model.

A model's test outcome is kept per item as a numerator and a denominator (accuracy: correct / 1;
error rate: edits / reference length; RMSE: squared-error sum / frames of a block), so that every
metric is a transformed ratio of sums::

    value = transform(sum(num) / sum(den))      transform: identity, or sqrt for RMSE

:func:`bootstrap` resamples, within each stratum (e.g. a cross-validation fold), the seeds and
the test items with replacement -- the same draws for every model, so a model's loss against
dense is paired item by item and seed by seed -- and returns percentile intervals. Shape legend:
S seeds, N test items of a stratum.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, ShapeError

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ratio": lambda r: r,
    "sqrt": np.sqrt,
}


def mean_sd(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"mean", "sd", "n"}``: the mean and the sample standard deviation (n - 1 in the
    denominator; ``None`` for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ConfigError("values is empty: need at least one number")
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """One model's per-item outcomes in one stratum.

    Attributes:
        num: (S, N) numerators (seed s, test item n).
        den: (S, N) or (N,) denominators (the latter when they do not depend on the seed).
    """

    num: np.ndarray
    den: np.ndarray

    def __post_init__(self) -> None:
        num = np.asarray(self.num, dtype=np.float64)
        den = np.asarray(self.den, dtype=np.float64)
        if num.ndim != 2 or num.shape[0] < 1 or num.shape[1] < 1:
            raise ShapeError(f"num must be (S, N) with S, N >= 1, got shape {num.shape}")
        if den.shape == num.shape[1:]:
            den = np.broadcast_to(den, num.shape)
        if den.shape != num.shape:
            raise ShapeError(f"den must be (N,) or (S, N) = {num.shape}, got shape {den.shape}")
        if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den)) and np.all(den >= 0)):
            raise ConfigError("num must be finite and den finite and >= 0")
        object.__setattr__(self, "num", num)
        object.__setattr__(self, "den", den)

    @property
    def seeds(self) -> int:
        return int(self.num.shape[0])

    @property
    def items(self) -> int:
        return int(self.num.shape[1])


def pooled_value(strata: Sequence[Outcomes], transform: str = "ratio") -> float:
    """The metric over every seed and item of every stratum: transform(sum num / sum den)."""
    num = sum(float(o.num.sum()) for o in strata)
    den = sum(float(o.den.sum()) for o in strata)
    return float(TRANSFORMS[transform](np.asarray(num / den)))


def bootstrap(
    models: Mapping[str, Sequence[Outcomes]],
    statistics_fn: Mapping[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]],
    *,
    transform: str = "ratio",
    n_boot: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap over seeds and items, stratified, the same draws for every model.

    Args:
        models: per model name, its :class:`Outcomes` in each stratum (every model has the same
            strata with the same S and N: the seeds pair, the items pair).
        statistics_fn: per statistic name, ``fn(values)`` where ``values[name]`` is the (n_boot,)
            array of that model's resampled metric; e.g. ``lambda v: v["delta"] - v["dense"]``.
        transform: ``"ratio"`` or ``"sqrt"`` (RMSE), applied to each resampled ratio of sums.
        n_boot: replicates.
        level: two-sided coverage of the interval.
        seed: of the resampling generator.

    Returns:
        Per statistic ``{"estimate", "low", "high"}``: the statistic on the data as observed, and
        the percentile interval.
    """
    if transform not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    names = list(models)
    if not names:
        raise ConfigError("models is empty")
    first = models[names[0]]
    for name in names:
        shapes = [o.num.shape for o in models[name]]
        if shapes != [o.num.shape for o in first]:
            raise ShapeError(
                f"model {name!r} has strata of shapes {shapes}, "
                f"{names[0]!r} has {[o.num.shape for o in first]}: outcomes must pair"
            )
    rng = np.random.default_rng(seed)
    num = {name: np.zeros(n_boot) for name in names}
    den = {name: np.zeros(n_boot) for name in names}
    for k, stratum in enumerate(first):
        s, n = stratum.num.shape
        seed_idx = rng.integers(0, s, size=(n_boot, s))
        item_idx = rng.integers(0, n, size=(n_boot, n))
        for name in names:
            o = models[name][k]
            # (n_boot, s): each seed's sums over the drawn items, then summed over drawn seeds.
            per_seed_num = o.num[:, item_idx].sum(2).T
            per_seed_den = o.den[:, item_idx].sum(2).T
            rows = np.arange(n_boot)[:, None]
            num[name] += per_seed_num[rows, seed_idx].sum(1)
            den[name] += per_seed_den[rows, seed_idx].sum(1)
    fn = TRANSFORMS[transform]
    resampled = {name: fn(num[name] / den[name]) for name in names}
    observed = {name: np.asarray([pooled_value(models[name], transform)]) for name in names}
    alpha = (1 - level) / 2
    out = {}
    for stat, f in statistics_fn.items():
        values = np.asarray(f(resampled), dtype=np.float64)
        out[stat] = {
            "estimate": float(np.asarray(f(observed)).reshape(-1)[0]),
            "low": float(np.quantile(values, alpha)),
            "high": float(np.quantile(values, 1 - alpha)),
        }
    return out


def blocks(values: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum a (S, T) per-frame series into consecutive blocks of ``block`` frames.

    For a moving bootstrap of a time series (a steering stream): frames next to each other are
    not independent, blocks of a few seconds nearly are. Returns ``(num (S, ceil(T / block)),
    den (ceil(T / block),))`` with den the frames in each block (the last may be shorter).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] == 0:
        raise ShapeError(f"values must be (S, T) with T >= 1, got shape {v.shape}")
    if block < 1:
        raise ConfigError(f"block must be >= 1, got {block}")
    count = math.ceil(v.shape[1] / block)
    pad = count * block - v.shape[1]
    padded = np.concatenate([v, np.zeros((v.shape[0], pad))], axis=1)
    den = np.full(count, float(block))
    den[-1] = block - pad
    return padded.reshape(v.shape[0], count, block).sum(2), den
