"""Benchmark inputs: sequences of a controlled input occupancy, and real log-mel features.

Shape legend: T time steps, B batch, I input features.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

log = logging.getLogger(__name__)

# Inputs live on the grid k/4 and move by one grid step, 1/4; the input threshold sits half way
# (1/8). Every value is exactly representable, so a moved feature always changes by 0.25 > Θx
# and an unmoved one by exactly 0: the input occupancy is exactly the fraction moved.
GRID = 4
MOVE = 1 / GRID
THETA_X = MOVE / 2


def controlled_sequence(
    steps: int, batch: int, features: int, occupancy: float, *, seed: int = 0
) -> Tensor:
    """A random walk in which exactly ``round(occupancy * I)`` features move at every step.

    Each step, for each sample, that many features chosen at random move by ±0.25 (reflected at
    ±1); the others keep their value. Delta-encoded with ``Θx = THETA_X`` every moved feature
    is sent and no other, so from the second step on the input occupancy is ``occupancy``
    (up to the rounding of ``occupancy * I``). The first step of a fresh stream is dense
    (x̂ starts at 0), which is why benchmarks run a prefix before the timed part.

    Returns:
        (T, B, I) float32, values on the grid k/4 in [-1, 1].
    """
    if steps < 0 or batch < 1 or features < 1:
        raise ConfigError(
            f"steps >= 0, batch >= 1, features >= 1 expected, got {steps}, {batch}, {features}"
        )
    if not 0.0 <= occupancy <= 1.0:
        raise ConfigError(f"occupancy must be in [0, 1], got {occupancy!r}")
    rng = np.random.default_rng(seed)
    moved = round(occupancy * features)
    x = np.empty((steps, batch, features), np.float32)
    value = rng.integers(-GRID, GRID + 1, size=(batch, features)).astype(np.float64) / GRID
    for t in range(steps):
        for b in range(batch):
            cols = rng.choice(features, size=moved, replace=False)
            step = np.where(rng.random(moved) < 0.5, -MOVE, MOVE)
            new = value[b, cols] + step
            # Reflect at the edges so the walk stays in [-1, 1] and still moves by 0.25.
            new = np.where(np.abs(new) > 1.0, value[b, cols] - step, new)
            value[b, cols] = new
        x[t] = value
    return torch.from_numpy(x)


def calibrate(
    occupancy_of: Callable[[float], float],
    target: float,
    *,
    low: float = 0.0,
    high: float = 1.0,
    iterations: int = 24,
) -> tuple[float, float]:
    """The threshold whose measured occupancy is closest to ``target``, by bisection.

    Occupancy falls (not always strictly) as the threshold grows, so bisection on the
    threshold converges to the crossing; the best threshold seen is returned.

    Args:
        occupancy_of: runs the layer at a threshold and returns the occupancy it measured.
        target: wanted occupancy in [0, 1].

    Returns:
        ``(threshold, occupancy measured at it)``.
    """
    best = (low, occupancy_of(low))
    if best[1] <= target:
        return best
    while occupancy_of(high) > target:
        high *= 4
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        occ = occupancy_of(mid)
        if abs(occ - target) < abs(best[1] - target):
            best = (mid, occ)
        if occ > target:
            low = mid
        else:
            high = mid
    return best


def data_root() -> Path:
    """``$DELTARNN_DATA``, else ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("DELTARNN_DATA", Path("..") / "shared" / "data"))


def fsdd_log_mel(
    root: str | os.PathLike | None = None,
    files: int = 5,
    *,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
) -> Tensor:
    """Log-mel features of the first ``files`` FSDD recordings (sorted by name), concatenated.

    Each band is standardised over the whole sequence (zero mean, unit variance), so thresholds
    are in units of a band's standard deviation.

    Args:
        root: data root holding ``fsdd/recordings/*.wav`` (default :func:`data_root`).

    Returns:
        (T, 1, n_mels) float32.
    """
    import librosa
    import soundfile as sf

    folder = Path(root if root is not None else data_root()) / "fsdd" / "recordings"
    paths = sorted(folder.glob("*.wav"))[:files]
    if not paths:
        raise FileNotFoundError(f"no FSDD recordings (*.wav) under {folder}; set DELTARNN_DATA")
    frames = []
    for path in paths:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
        n_fft = round(rate * win_ms / 1000)
        mel = librosa.feature.melspectrogram(
            y=wave, sr=rate, n_fft=n_fft, hop_length=round(rate * hop_ms / 1000), n_mels=n_mels
        )
        frames.append(np.log(mel + 1e-6).T)
    feats = np.concatenate(frames).astype(np.float64)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    log.info("FSDD log-mel: %d files, %d frames of %d bands", len(paths), len(feats), n_mels)
    return torch.from_numpy(feats.astype(np.float32)).unsqueeze(1)
