"""Training-time augmentation of audio features: speed perturbation, tempo stretch, SpecAugment.

Shape legend: N samples, T frames, F feature bands.

* :func:`speed_perturb` resamples a waveform so it plays ``rate`` times faster: duration / rate,
  every frequency x rate (Ko et al., 2015, the 0.9/1.0/1.1 recipe). It acts on audio, so its
  features are computed once per rate (:func:`speed_perturbed_features`, cached) and a training
  item draws one of them per epoch.
* :func:`time_stretch` changes the tempo of a (T, F) feature array by linear interpolation along
  time (T' = round(T / rate)); pitch is untouched.
* :func:`spec_mask` zeroes random time and frequency stripes (Park et al., 2019, SpecAugment
  without warping). Apply it after standardisation, so 0 is the band mean.

Every function takes an explicit ``torch.Generator`` (or numpy ``Generator``), so an augmented
epoch is reproducible from its seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError
from ._files import fingerprint
from .features import FeatureCache, FeatureParams, load_audio


def speed_perturb(waveform: np.ndarray, rate: float) -> np.ndarray:
    """The waveform played ``rate`` times faster (duration / rate, frequencies x rate).

    Args:
        waveform: (N,) samples.
        rate: > 0; 1 returns a copy.

    Returns:
        (round(N / rate),) float32 at the same sample rate.
    """
    if not (np.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate must be finite and > 0, got {rate}")
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ShapeError(f"waveform must be a non-empty 1-D array (N,), got shape {x.shape}")
    if rate == 1:
        return x.copy()
    import librosa

    # Resampling from rate*sr to sr keeps N/rate samples; read at sr they play rate x faster.
    y = librosa.resample(x, orig_sr=1000.0 * rate, target_sr=1000.0)
    return np.ascontiguousarray(y, dtype=np.float32)


def speed_perturbed_features(
    paths: Iterable, params: FeatureParams, rate: float, cache: FeatureCache | None
) -> list[np.ndarray]:
    """(T_i, n_mels) features of each audio file played ``rate`` times faster.

    Cached like ordinary features (by file fingerprint, ``params`` and ``rate``), so the
    perturbed copies are computed once.
    """

    def compute(path) -> np.ndarray:
        waveform, _ = load_audio(path, params.sample_rate)
        return params.compute(speed_perturb(waveform, rate))

    if rate == 1:
        from .features import file_features

        return file_features(paths, params, cache)
    out = []
    for path in paths:
        if cache is None:
            out.append(compute(path))
            continue
        description = {"source": fingerprint(path), "params": params.to_dict(), "speed": rate}
        arrays = cache.get_or_compute(description, lambda p=path: {"features": compute(p)})
        out.append(arrays["features"])
    return out


def time_stretch(x: Tensor, rate: float) -> Tensor:
    """Change the tempo of a (T, F) feature sequence: T' = max(1, round(T / rate)) frames.

    Linear interpolation along time with aligned end points (frame 0 and frame T-1 are kept).

    Args:
        x: (T, F) tensor, T >= 1.
        rate: > 0; above 1 is faster (fewer frames).
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ShapeError(f"x must be (T, F) with T >= 1, got shape {tuple(x.shape)}")
    if not (np.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate must be finite and > 0, got {rate}")
    steps = x.shape[0]
    new = max(1, round(steps / rate))
    if new == steps:
        return x.clone()
    if steps == 1:
        return x.expand(new, -1).clone()
    pos = torch.linspace(0, steps - 1, new, dtype=torch.float64)
    lo = pos.floor().long().clamp(max=steps - 2)
    w = (pos - lo).to(x.dtype)[:, None]
    return x[lo] * (1 - w) + x[lo + 1] * w


def spec_mask(
    x: Tensor,
    generator: torch.Generator,
    *,
    time_masks: int = 2,
    time_width: int = 10,
    freq_masks: int = 2,
    freq_width: int = 6,
    value: float = 0.0,
) -> Tensor:
    """Set ``time_masks`` time stripes and ``freq_masks`` band stripes of a (T, F) array to
    ``value``; each stripe's width is uniform in [0, width], its start uniform where it fits.

    Time stripes are at most a fifth of T wide, so a short utterance is never blanked out.
    Returns a new tensor.
    """
    if x.dim() != 2:
        raise ShapeError(f"x must be (T, F), got shape {tuple(x.shape)}")
    for name, v in (
        ("time_masks", time_masks),
        ("time_width", time_width),
        ("freq_masks", freq_masks),
        ("freq_width", freq_width),
    ):
        if v < 0:
            raise ConfigError(f"{name} must be >= 0, got {v}")
    out = x.clone()
    steps, bands = x.shape

    def stripes(count: int, width: int, size: int):
        for _ in range(count):
            w = int(torch.randint(0, width + 1, (1,), generator=generator))
            w = min(w, size)
            if w == 0:
                continue
            start = int(torch.randint(0, size - w + 1, (1,), generator=generator))
            yield start, start + w

    for a, b in stripes(time_masks, min(time_width, steps // 5), steps):
        out[a:b] = value
    for a, b in stripes(freq_masks, freq_width, bands):
        out[:, a:b] = value
    return out


@dataclasses.dataclass(frozen=True)
class FeatureAugment:
    """Tempo stretch then SpecAugment masks, applied to one standardised (T, F) item.

    Attributes:
        tempo: (low, high) range of the tempo factor, drawn uniformly; (1, 1) is off.
        time_masks, time_width, freq_masks, freq_width: see :func:`spec_mask` (0 masks: off).
    """

    tempo: tuple[float, float] = (1.0, 1.0)
    time_masks: int = 0
    time_width: int = 10
    freq_masks: int = 0
    freq_width: int = 6

    def __post_init__(self) -> None:
        lo, hi = self.tempo
        if not (0 < lo <= hi and np.isfinite(hi)):
            raise ConfigError(f"tempo must be (low, high) with 0 < low <= high, got {self.tempo}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        lo, hi = self.tempo
        if hi > lo or lo != 1:
            rate = lo + (hi - lo) * float(torch.rand((), generator=generator))
            x = time_stretch(x, rate)
        if self.time_masks or self.freq_masks:
            x = spec_mask(
                x,
                generator,
                time_masks=self.time_masks,
                time_width=self.time_width,
                freq_masks=self.freq_masks,
                freq_width=self.freq_width,
            )
        return x


def pick_versions(
    versions: Sequence[Sequence[np.ndarray]], generator: torch.Generator
) -> list[np.ndarray]:
    """One array per item, drawn uniformly from ``versions`` (V lists of N arrays each), e.g.
    the speed-perturbed copies of a training set, redrawn every epoch."""
    if not versions:
        raise ConfigError("versions is empty: need at least one list of arrays")
    n = len(versions[0])
    if any(len(v) != n for v in versions):
        raise ShapeError(f"every version must hold {n} arrays, got {[len(v) for v in versions]}")
    picks = torch.randint(0, len(versions), (n,), generator=generator).tolist()
    return [versions[k][i] for i, k in enumerate(picks)]
